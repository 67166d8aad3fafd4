"""Graph attention networks (Baggag & Saad §5.4, Veličković et al. 2018).

Graphs follow :mod:`dlbook.graphs` (and PyTorch Geometric): node features ``x`` of shape
``(n, d_in)`` and an ``edge_index`` of shape ``(2, E)`` whose column ``(j, i)`` sends a
message from source ``j`` to target ``i``. With ``H`` heads of width ``d`` a GAT layer
computes, for every head ``h``,

    g_i = W_h^T x_i                                   (n, H, d) after the projection
    e_ij = LeakyReLU(a_h^T [g_i || g_j])              (5.12), slope 0.2
    alpha_ij = softmax_{j in N(i)} e_ij               (5.11), N(i) includes i itself
    x_i' = ||_h sum_j alpha_ij^(h) g_j^(h)            (5.10), (5.13): heads concatenated

``a_h`` of length ``2d`` splits into the part ``a_dst`` that multiplies the target ``g_i``
and the part ``a_src`` that multiplies the source ``g_j``, so
``e_ij = LeakyReLU(a_dst . g_i + a_src . g_j)``: one score per node and side, added on
every edge. The softmax is taken over the edges arriving at ``i`` (sparse form,
:func:`dlbook.graphs.segment_softmax`) or, equivalently, over row ``i`` of a dense
``(n, n)`` score matrix whose non-edges are set to ``-inf`` (dense masked form).
PyTorch Geometric's ``GATConv`` stores ``W`` as ``lin.weight`` (shape ``(H d, d_in)``)
and ``a_src``, ``a_dst`` as ``att_src``, ``att_dst`` (shape ``(1, H, d)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import graphs

__all__ = ["attention_scores", "sparse_attention", "dense_attention", "GATLayer", "GAT"]


def _check_heads(g: torch.Tensor, a_dst: torch.Tensor, a_src: torch.Tensor) -> None:
    if g.dim() != 3:
        raise ValueError(f"projected features must have shape (n, H, d), got {tuple(g.shape)}")
    if a_dst.shape != g.shape[1:] or a_src.shape != g.shape[1:]:
        raise ValueError(f"a_dst and a_src must have shape (H, d) = {tuple(g.shape[1:])}, "
                         f"got {tuple(a_dst.shape)} and {tuple(a_src.shape)}")


def attention_scores(g: torch.Tensor, a_dst: torch.Tensor, a_src: torch.Tensor, edge_index: torch.Tensor,
                     negative_slope: float = 0.2) -> torch.Tensor:
    """The scores (5.12) on the edges: ``e_ij = LeakyReLU(a_dst . g_i + a_src . g_j)``.

    ``g``: projected features ``(n, H, d)``; ``a_dst``, ``a_src``: ``(H, d)``;
    ``edge_index``: ``(2, E)`` with column ``(j, i)``. Returns ``(E, H)``.
    """
    _check_heads(g, a_dst, a_src)
    graphs.check_edge_index(edge_index, g.shape[0])
    s_dst = (g * a_dst).sum(-1)                       # (n, H): a_dst . g_i
    s_src = (g * a_src).sum(-1)                       # (n, H): a_src . g_j
    return F.leaky_relu(s_dst[edge_index[1]] + s_src[edge_index[0]], negative_slope)


def sparse_attention(g: torch.Tensor, a_dst: torch.Tensor, a_src: torch.Tensor, edge_index: torch.Tensor,
                     negative_slope: float = 0.2, dropout: float = 0.0,
                     training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-list GAT aggregation: scores (5.12), softmax (5.11), weighted sum (5.10).

    ``edge_index`` must already hold the self-loops if ``i`` should attend to itself.
    ``dropout`` acts on the attention coefficients in training mode, as in Veličković
    et al. Returns ``(out, alpha)``: ``out`` of shape ``(n, H, d)`` with
    ``out_i = sum_j alpha_ij g_j`` and ``alpha`` of shape ``(E, H)`` (before dropout).
    """
    n = g.shape[0]
    e = attention_scores(g, a_dst, a_src, edge_index, negative_slope)
    alpha = graphs.segment_softmax(e, edge_index[1], n)
    a = graphs.feature_dropout(alpha, dropout, training)   # F.dropout's distribution, faster
    out = graphs.aggregate(a.unsqueeze(-1) * g[edge_index[0]], edge_index[1], n, reduce="sum")
    return out, alpha


def dense_attention(g: torch.Tensor, a_dst: torch.Tensor, a_src: torch.Tensor, adj: torch.Tensor,
                    negative_slope: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense masked GAT: all ``n^2`` scores (5.12), non-edges masked, row softmax (5.11).

    ``adj``: ``(n, n)``, non-zero where ``j`` is a neighbour of ``i`` (``adj[i, j]``,
    self-loops included, e.g. ``graphs.to_dense_adj`` of the edges with loops). Returns
    ``(out, alpha)`` with ``out`` ``(n, H, d)`` and ``alpha`` ``(n, n, H)``, zero off the
    edges: the matrix ``A_alpha`` of (5.10), one per head. Memory is ``O(n^2 H)``.
    """
    _check_heads(g, a_dst, a_src)
    n = g.shape[0]
    if adj.shape != (n, n):
        raise ValueError(f"adj must have shape ({n}, {n}), got {tuple(adj.shape)}")
    if bool((adj != 0).sum(1).eq(0).any()):
        raise ValueError("every node needs at least one neighbour in adj (add self-loops)")
    s_dst = (g * a_dst).sum(-1)                                     # (n, H)
    s_src = (g * a_src).sum(-1)                                     # (n, H)
    e = F.leaky_relu(s_dst[:, None, :] + s_src[None, :, :], negative_slope)   # (n, n, H)
    e = e.masked_fill((adj == 0).unsqueeze(-1), float("-inf"))
    alpha = torch.softmax(e, dim=1)                                  # over the neighbours j
    return torch.einsum("ijh,jhd->ihd", alpha, g), alpha


class GATLayer(nn.Module):
    """One multi-head graph attention layer, (5.10)-(5.13) without the activation.

    Parameters: ``weight`` ``(d_in, H d_out)`` (the ``W_h`` side by side), ``att_dst`` and
    ``att_src`` ``(H, d_out)`` (the two halves of every ``a_h``), ``bias``. ``forward(x,
    edge_index)`` maps ``(n, d_in)`` to ``(n, H d_out)`` (heads concatenated, ``concat=True``)
    or ``(n, d_out)`` (heads averaged); ``x`` may be a sparse COO tensor (bag-of-words
    features), then ``x @ W`` is a sparse product. Self-loops are added to ``edge_index`` so that every
    node attends to itself. ``dense=True`` computes the same output with the dense masked
    softmax. The last attention coefficients are kept in ``self.alpha`` (``(E + n, H)``,
    with the edges in ``self.alpha_edge_index``) when ``keep_attention`` is set.
    """

    def __init__(self, d_in: int, d_out: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_in < 1 or d_out < 1 or heads < 1:
            raise ValueError(f"d_in, d_out and heads must be positive, got {d_in}, {d_out}, {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_in, self.d_out, self.heads, self.concat = d_in, d_out, heads, concat
        self.negative_slope, self.dropout = negative_slope, dropout
        self.weight = nn.Parameter(torch.empty(d_in, heads * d_out))
        self.att_dst = nn.Parameter(torch.empty(heads, d_out))
        self.att_src = nn.Parameter(torch.empty(heads, d_out))
        self.bias = nn.Parameter(torch.zeros(heads * d_out if concat else d_out)) if bias else None
        self.keep_attention = False
        self.alpha: torch.Tensor | None = None
        self.alpha_edge_index: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot initialisation, as in the reference code and in GATConv
        nn.init.xavier_uniform_(self.weight)
        for a in (self.att_dst, self.att_src):
            bound = (6.0 / (1 + self.d_out)) ** 0.5            # glorot on a (1, d) slice per head
            nn.init.uniform_(a, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, dense: bool = False) -> torch.Tensor:
        graphs.check_features(x, allow_sparse=True)
        n = x.shape[0]
        if x.shape[1] != self.d_in:
            raise ValueError(f"x has {x.shape[1]} features, the layer expects {self.d_in}")
        ei = graphs.add_self_loops(edge_index, n)                       # A + I
        g = (x @ self.weight).view(n, self.heads, self.d_out)           # W_h^T x_i for every head
        if dense:
            adj = graphs.to_dense_adj(ei, n)
            out, alpha_dense = dense_attention(g, self.att_dst, self.att_src, adj, self.negative_slope)
            alpha = alpha_dense[ei[1], ei[0]]
            if self.training and self.dropout > 0:
                raise ValueError("the dense form is for checking; use dense=False to train with dropout")
        else:
            out, alpha = sparse_attention(g, self.att_dst, self.att_src, ei, self.negative_slope,
                                          self.dropout, self.training)
        if self.keep_attention:
            self.alpha, self.alpha_edge_index = alpha.detach(), ei
        out = out.reshape(n, self.heads * self.d_out) if self.concat else out.mean(dim=1)
        return out + self.bias if self.bias is not None else out

    @torch.no_grad()
    def copy_from_pyg(self, conv: nn.Module) -> "GATLayer":
        """Copy the weights of a ``torch_geometric.nn.GATConv`` with the same sizes."""
        if conv.lin.weight.shape != (self.heads * self.d_out, self.d_in) or conv.heads != self.heads:
            raise ValueError("GATConv must have the same d_in, d_out and heads")
        if conv.concat != self.concat:
            raise ValueError("GATConv and this layer disagree on concat")
        self.weight.copy_(conv.lin.weight.t())
        self.att_dst.copy_(conv.att_dst.view(self.heads, self.d_out))
        self.att_src.copy_(conv.att_src.view(self.heads, self.d_out))
        if self.bias is not None:
            self.bias.copy_(conv.bias)
        return self

    def extra_repr(self) -> str:
        return f"{self.d_in}, {self.d_out}, heads={self.heads}, concat={self.concat}, dropout={self.dropout}"


def _make_layer(kind: str, d_in: int, d_out: int, heads: int, concat: bool, dropout: float) -> nn.Module:
    if kind == "ours":
        return GATLayer(d_in, d_out, heads=heads, concat=concat, dropout=dropout)
    if kind == "pyg":
        from torch_geometric.nn import GATConv

        return GATConv(d_in, d_out, heads=heads, concat=concat, dropout=dropout)
    raise ValueError(f"layer must be 'ours' or 'pyg', got {kind!r}")


class GAT(nn.Module):
    """The two-layer transductive GAT of Veličković et al. (their Cora setting by default).

    ``dropout`` on the input features -> ``heads`` x ``d_hidden`` attention layer, heads
    concatenated, ELU -> ``dropout`` -> one attention layer with ``out_heads`` heads of
    width ``d_out``, averaged. The attention coefficients get the same dropout. Input
    dropout uses :func:`dlbook.graphs.feature_dropout` (same distribution as ``F.dropout``, faster on
    sparse features). ``layer="pyg"`` builds the layers from ``GATConv``.
    ``forward(x, edge_index)`` maps ``(n, d_in)`` to scores ``(n, d_out)``.
    """

    def __init__(self, d_in: int, d_hidden: int = 8, d_out: int = 7, heads: int = 8, out_heads: int = 1,
                 dropout: float = 0.6, layer: str = "ours"):
        super().__init__()
        self.conv1 = _make_layer(layer, d_in, d_hidden, heads, True, dropout)
        self.conv2 = _make_layer(layer, d_hidden * heads, d_out, out_heads, False, dropout)
        self.dropout, self.kind = dropout, layer

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = graphs.feature_dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


def fit_velickovic(model: nn.Module, data, epochs: int = 1000, lr: float = 0.005, weight_decay: float = 5e-4,
                   patience: int = 100, progress: bool = True, desc: str = "GAT") -> graphs.NodeResult:
    """Full-batch training with the early stopping of Veličković et al.'s reference code.

    Like :func:`dlbook.graphs.fit_nodes` (one Adam step per epoch on the training nodes'
    cross-entropy), but the stopping rule is theirs: the patience counter is reset
    whenever the validation accuracy reaches its best value so far *or* the validation
    loss reaches its lowest, and the model is saved when both happen at once; training
    stops after ``patience`` epochs without either. The test accuracy of the saved model
    is returned in a :class:`dlbook.graphs.NodeResult`.
    """
    import copy
    import time

    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_acc, best_loss, waited = -1.0, float("inf"), 0
    state, best_epoch, best_val = copy.deepcopy(model.state_dict()), 0, 0.0
    hist: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_acc": []}
    start, epoch = time.perf_counter(), 0
    for epoch in tqdm(range(1, epochs + 1), desc=desc, leave=False, disable=not progress):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            out = model(data.x, data.edge_index)
            val_loss = F.cross_entropy(out[data.val_mask], data.y[data.val_mask]).item()
            val_acc = graphs.masked_accuracy(out, data.y, data.val_mask)
        hist["loss"].append(loss.item())
        hist["val_loss"].append(val_loss)
        hist["val_acc"].append(val_acc)
        if val_acc >= best_acc or val_loss <= best_loss:
            if val_acc >= best_acc and val_loss <= best_loss:
                state, best_epoch, best_val = copy.deepcopy(model.state_dict()), epoch, val_acc
            best_acc, best_loss, waited = max(best_acc, val_acc), min(best_loss, val_loss), 0
        else:
            waited += 1
            if waited >= patience:
                break
    seconds = (time.perf_counter() - start) / max(epoch, 1)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out = model(data.x, data.edge_index)
    return graphs.NodeResult(test_acc=graphs.masked_accuracy(out, data.y, data.test_mask), val_acc=best_val,
                             best_epoch=best_epoch, epochs_run=epoch, seconds_per_epoch=seconds, history=hist)
