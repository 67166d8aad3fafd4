"""Message passing and graph convolutional networks (Baggag & Saad §5.1-5.2).

Graphs follow :mod:`dlbook.graphs` (and PyTorch Geometric): node features ``x`` of shape
``(n, d)`` and an ``edge_index`` of shape ``(2, E)`` whose column ``(j, i)`` sends a
message from source ``j`` to target ``i``. The pieces of the chapter are

    x_i' = UPDATE(x_i, AGGREGATE({ MESSAGE(x_j, x_i) : j in N(i) }))     (5.1)
    Â = D̃^{-1/2} (A + I) D̃^{-1/2}                                        (5.2)
    X' = σ(Â X W)                                                        (5.4)

for node classification (the Kipf & Welling model :class:`GCN`), and for graph
classification the block-diagonal batch of m graphs

    Â = diag(Â_1, ..., Â_m),  X = [X_1; ...; X_m]                       (5.5)

followed by the mean over the nodes of each graph and a small MLP

    z_G = MLP(mean_{i in V_G} x_i)                                      (5.6)-(5.7),

plus two diagnostics: the Dirichlet energy (over-smoothing) and the 1-WL colour
refinement (the limit of what message passing can distinguish).
"""

from __future__ import annotations

import math
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import graphs

__all__ = ["message_passing", "gcn_propagate", "GCNLayer", "GCN", "GraphBatch",
           "block_diagonal_batch", "mean_pool", "GraphClassifier", "graph_batches", "fit_graphs",
           "GraphFitResult", "dirichlet_energy", "wl_colors", "wl_equivalent"]


# ---------------------------------------------------------------------------
# Message passing (5.1)

def message_passing(x: torch.Tensor, edge_index: torch.Tensor,
                    message: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    update: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    reduce: str = "sum", edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """One round of message passing, equation (5.1).

    ``x`` is ``(n, d)``. For every edge ``(j, i)`` the message is
    ``message(x_j, x_i)`` (arguments of shape ``(E, d)``, result ``(E, d')``); by default
    it is ``x_j``, multiplied by ``edge_weight[e]`` (shape ``(E,)``) when weights are given.
    The messages arriving at each node are combined by ``reduce`` ("sum", "mean", "max";
    :func:`dlbook.graphs.aggregate`), giving ``m`` of shape ``(n, d')``; nodes without
    incoming edges get zeros. The result is ``update(x, m)``, by default ``m`` itself.
    """
    graphs.check_features(x)
    n = x.shape[0]
    graphs.check_edge_index(edge_index, n)
    src, dst = edge_index[0], edge_index[1]
    x_j, x_i = x[src], x[dst]
    msg = message(x_j, x_i) if message is not None else x_j
    if edge_weight is not None:
        if edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_weight must have shape ({edge_index.shape[1]},), got {tuple(edge_weight.shape)}")
        msg = msg * edge_weight.view(-1, *([1] * (msg.dim() - 1))).to(msg.dtype)
    agg = graphs.aggregate(msg, dst, n, reduce=reduce)
    return update(x, agg) if update is not None else agg


def gcn_propagate(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Â X computed edge by edge: (5.1) with weighted sum messages ``â_ij x_j`` over N(i) ∪ {i}.

    This is (5.3): the GCN aggregation without an UPDATE step. ``x``: ``(n, d)`` -> ``(n, d)``.
    """
    graphs.check_features(x)
    ei, w = graphs.gcn_edge_weights(edge_index, x.shape[0], dtype=x.dtype)
    return message_passing(x, ei, reduce="sum", edge_weight=w)


# ---------------------------------------------------------------------------
# The GCN layer (5.4)

_ADJ_CACHE: list[tuple] = []      # (weakref to edge_index, version, n, sparse, dtype, Â)
_ADJ_CACHE_SIZE = 64               # enough for the fixed mini-batches of fit_graphs


def _cached_adjacency(edge_index: torch.Tensor, num_nodes: int, sparse: bool,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """Â of :func:`dlbook.graphs.normalized_adjacency`, shared by all layers for the same graph.

    An entry is reused only for the very same ``edge_index`` object (held by a weak
    reference, so a freed tensor never matches), unchanged since (its in-place version
    counter), with the same node count, format and dtype. Consecutive layers of a model and
    the epochs of full-batch training therefore build Â once.
    """
    dtype = dtype or torch.get_default_dtype()
    key = (edge_index._version, num_nodes, sparse, dtype)
    for ref, *rest, a_hat in _ADJ_CACHE:
        if ref() is edge_index and tuple(rest) == key:
            return a_hat
    a_hat = graphs.normalized_adjacency(edge_index, num_nodes, sparse=sparse, dtype=dtype)
    _ADJ_CACHE.append((weakref.ref(edge_index), *key, a_hat))
    del _ADJ_CACHE[:-_ADJ_CACHE_SIZE]
    return a_hat


class GCNLayer(nn.Module):
    """One graph convolution without activation: ``Â X W + b``, (5.4) without σ.

    ``W`` is stored as in the paper, shape ``(d_in, d_out)`` (``nn.Linear`` and PyG store
    its transpose). ``forward(x, edge_index)`` maps ``(n, d_in)`` to ``(n, d_out)``; it
    computes ``X W`` first (cheaper when ``d_out < d_in``) and then multiplies by Â
    from :func:`dlbook.graphs.normalized_adjacency`, dense (``sparse=False``) or as a
    ``torch.sparse_coo_tensor`` (``sparse=True``). Â is cached for the last few
    ``edge_index`` tensors seen (the same tensor object, unchanged, same node count;
    shared by all layers), so a full-batch training loop builds it once. Initialisation as in PyG's ``GCNConv``:
    Glorot-uniform ``W``, zero bias.
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True, sparse: bool = False):
        super().__init__()
        if not (isinstance(d_in, int) and isinstance(d_out, int)) or d_in < 1 or d_out < 1:
            raise ValueError(f"d_in and d_out must be positive ints, got {d_in!r}, {d_out!r}")
        self.d_in, self.d_out, self.sparse = d_in, d_out, bool(sparse)
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.d_in + self.d_out))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def adjacency(self, edge_index: torch.Tensor, num_nodes: int,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
        """Â (5.2) for this graph, ``(n, n)``, dense or sparse, in ``dtype``; cached."""
        return _cached_adjacency(edge_index, num_nodes, self.sparse, dtype)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        graphs.check_features(x, allow_sparse=True)
        if x.shape[1] != self.d_in:
            raise ValueError(f"GCNLayer expects {self.d_in} input features, got x of shape {tuple(x.shape)}")
        a_hat = self.adjacency(edge_index, x.shape[0], x.dtype)
        h = torch.sparse.mm(x, self.weight) if x.is_sparse else x @ self.weight
        out = torch.sparse.mm(a_hat, h) if self.sparse else a_hat @ h
        return out + self.bias if self.bias is not None else out

    @classmethod
    def from_pyg(cls, conv: nn.Module, sparse: bool = False) -> "GCNLayer":
        """A layer with the weights of a ``torch_geometric.nn.GCNConv`` (default options).

        PyG stores ``lin.weight`` as ``(d_out, d_in)``; we store its transpose.
        """
        from torch_geometric.nn import GCNConv

        if not isinstance(conv, GCNConv):
            raise TypeError(f"from_pyg needs a torch_geometric.nn.GCNConv, got {type(conv).__name__}")
        if not (conv.normalize and conv.add_self_loops) or conv.improved:
            raise ValueError("from_pyg supports GCNConv with normalize=True, add_self_loops=True, "
                             "improved=False (the Â of (5.2))")
        layer = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None, sparse=sparse)
        layer.to(dtype=conv.lin.weight.dtype)       # a float64 GCNConv gives a float64 layer
        layer.copy_from_pyg(conv)
        return layer

    def copy_from_pyg(self, conv: nn.Module) -> "GCNLayer":
        """Copy the weights of a ``GCNConv`` of the same shape into this layer (in place)."""
        w = conv.lin.weight
        if tuple(w.shape) != (self.d_out, self.d_in):
            raise ValueError(f"GCNConv weight has shape {tuple(w.shape)}, expected {(self.d_out, self.d_in)}")
        with torch.no_grad():
            self.weight.copy_(w.T)
            if self.bias is not None:
                self.bias.copy_(conv.bias)
        return self

    def extra_repr(self) -> str:
        return f"{self.d_in}, {self.d_out}, bias={self.bias is not None}, sparse={self.sparse}"


def _make_layer(kind: str, d_in: int, d_out: int, sparse: bool) -> nn.Module:
    if kind == "ours":
        return GCNLayer(d_in, d_out, sparse=sparse)
    if kind == "pyg":
        from torch_geometric.nn import GCNConv

        return GCNConv(d_in, d_out)
    raise ValueError(f"layer must be 'ours' or 'pyg', got {kind!r}")


class GCN(nn.Module):
    """The GCN of Kipf & Welling: ``layers`` graph convolutions (5.4) with ReLU between them.

    Layer widths ``d_in -> d_hidden -> ... -> d_hidden -> d_out``; dropout with
    probability ``dropout`` on the input of every convolution (as in Kipf & Welling's
    code; a sparse COO ``x`` is accepted, see :func:`dlbook.graphs.feature_dropout`); no activation
    after the last layer, so ``forward(x, edge_index)`` returns
    scores ``(n, d_out)`` for ``nn.CrossEntropyLoss`` (e.g. through
    :func:`dlbook.graphs.fit_nodes`). With ``residual=True`` every hidden-to-hidden
    layer adds its input: ``X' = X + ReLU(Â X W + b)``. ``layer="pyg"`` uses
    ``torch_geometric.nn.GCNConv`` instead of :class:`GCNLayer` (same function, same
    initialisation); ``sparse`` selects the sparse Â for our layer (default: sparse,
    as real graphs are sparse).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, layers: int = 2, dropout: float = 0.5,
                 residual: bool = False, layer: str = "ours", sparse: bool = True):
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = [d_in] + [d_hidden] * (layers - 1) + [d_out]
        self.convs = nn.ModuleList(_make_layer(layer, a, b, sparse) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout, self.residual, self.kind = dropout, residual, layer

    def hidden_states(self, x: torch.Tensor, edge_index: torch.Tensor) -> list[torch.Tensor]:
        """``[X^(0), X^(1), ..., X^(L)]``: the input and the output of every layer (after ReLU
        for hidden layers, the scores for the last). Dropout acts only in training mode."""
        states = [x]
        last = len(self.convs) - 1
        for k, conv in enumerate(self.convs):
            h = graphs.feature_dropout(x, self.dropout, self.training)
            h = conv(h, edge_index)
            if k < last:
                h = F.relu(h)
                if self.residual and h.shape == x.shape and k > 0:
                    h = x + h
            x = h
            states.append(x)
        return states

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(x, edge_index)[-1]


# ---------------------------------------------------------------------------
# Graph classification: the block-diagonal batch (5.5) and mean pooling (5.6)-(5.7)

@dataclass
class GraphBatch:
    """m graphs as one disconnected graph (5.5).

    ``x``: ``(n_1 + ... + n_m, d)`` stacked features; ``edge_index``: ``(2, E_1 + ... + E_m)``
    with graph k's node ids shifted by ``n_1 + ... + n_{k-1}``; ``batch``: ``(n,)`` graph id
    of every node; ``ptr``: ``(m + 1,)`` offsets; ``y``: ``(m,)`` labels or ``None``.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    y: torch.Tensor | None = None

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    def to(self, device) -> "GraphBatch":
        return GraphBatch(self.x.to(device), self.edge_index.to(device), self.batch.to(device),
                          self.ptr.to(device), None if self.y is None else self.y.to(device))


def _parts(g) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if isinstance(g, (tuple, list)):
        if len(g) not in (2, 3):
            raise ValueError("a graph given as a tuple must be (x, edge_index) or (x, edge_index, y)")
        return g[0], g[1], g[2] if len(g) == 3 else None
    if hasattr(g, "x") and hasattr(g, "edge_index"):
        return g.x, g.edge_index, getattr(g, "y", None)
    raise TypeError(f"expected a graph with .x and .edge_index or a tuple (x, edge_index[, y]), "
                    f"got {type(g).__name__}")


def block_diagonal_batch(graph_list: Iterable) -> GraphBatch:
    """Put m graphs into one block-diagonal graph by hand, equation (5.5).

    Each graph is a PyG ``Data`` (``.x``, ``.edge_index``, optional ``.y``) or a tuple
    ``(x, edge_index[, y])``. Features are concatenated along the node dimension, edge
    indices are offset by the number of nodes before them (so Â of the union is
    ``diag(Â_1, ..., Â_m)``), and ``batch[i]`` records the graph of node i.
    """
    xs, eis, bs, ys, sizes = [], [], [], [], [0]
    offset = 0
    for k, g in enumerate(graph_list):
        x, ei, y = _parts(g)
        graphs.check_features(x, f"graph {k}: x")
        n = x.shape[0]
        graphs.check_edge_index(ei, n)
        xs.append(x)
        eis.append(ei + offset)
        bs.append(torch.full((n,), k, dtype=torch.long, device=x.device))
        ys.append(y)
        offset += n
        sizes.append(offset)
    if not xs:
        raise ValueError("block_diagonal_batch needs at least one graph")
    if len({x.shape[1] for x in xs}) != 1:
        raise ValueError(f"all graphs must have the same feature dimension, got {sorted({x.shape[1] for x in xs})}")
    y = None if any(v is None for v in ys) else torch.cat([v.reshape(-1) for v in ys])
    return GraphBatch(torch.cat(xs), torch.cat(eis, dim=1), torch.cat(bs),
                      torch.tensor(sizes, device=xs[0].device), y)


def mean_pool(x: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """The mean of the node features of each graph, (5.7): ``(n, d)`` -> ``(m, d)``.

    ``batch`` (shape ``(n,)``) gives each node's graph id in ``0..m-1``; ``num_graphs``
    defaults to ``batch.max() + 1``. A graph with no nodes gets zeros.
    """
    graphs.check_features(x)
    if batch.dim() != 1 or batch.shape[0] != x.shape[0]:
        raise ValueError(f"batch must have shape ({x.shape[0]},), got {tuple(batch.shape)}")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return graphs.aggregate(x, batch, num_graphs, reduce="mean")


class GraphClassifier(nn.Module):
    """GCN layers, mean pooling and a small MLP: the graph classifier of (5.4)-(5.7).

    ``layers`` graph convolutions ``d_in -> d_hidden -> ... -> d_hidden``, each followed by
    ReLU; mean pooling per graph (5.7); then ``Linear(d_hidden, d_hidden) -> ReLU ->
    Dropout -> Linear(d_hidden, n_classes)`` (5.6). ``forward(x, edge_index, batch,
    num_graphs=None)`` returns scores ``(m, n_classes)``. ``layer`` is "ours" (dense Â of
    the whole batch: fine for small molecules; ``sparse=True`` for large batches) or "pyg".
    """

    def __init__(self, d_in: int, d_hidden: int, n_classes: int, layers: int = 3, dropout: float = 0.0,
                 layer: str = "ours", sparse: bool = False):
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        widths = [d_in] + [d_hidden] * layers
        self.convs = nn.ModuleList(_make_layer(layer, a, b, sparse) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Sequential(nn.Linear(d_hidden, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(d_hidden, n_classes))

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
              num_graphs: int | None = None) -> torch.Tensor:
        """The pooled graph representations ``(m, d_hidden)`` before the MLP."""
        for conv in self.convs:
            x = F.relu(conv(x, edge_index))
        return mean_pool(x, batch, num_graphs)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int | None = None) -> torch.Tensor:
        return self.head(self.embed(x, edge_index, batch, num_graphs))


def graph_batches(graph_list: Sequence, batch_size: int, shuffle: bool = False,
                  generator: torch.Generator | None = None) -> list[GraphBatch]:
    """Split a list of graphs into block-diagonal mini-batches (5.5) of ``batch_size`` graphs.

    With ``shuffle=True`` the order is a random permutation drawn from ``generator``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    order = torch.randperm(len(graph_list), generator=generator).tolist() if shuffle else range(len(graph_list))
    order = list(order)
    return [block_diagonal_batch([graph_list[i] for i in order[k:k + batch_size]])
            for k in range(0, len(order), batch_size)]


@dataclass
class GraphFitResult:
    """Outcome of :func:`fit_graphs`: test accuracy and per-epoch history.

    With validation graphs, ``best_epoch`` is the epoch (counted from 1) whose weights were
    kept and tested, and ``val_acc`` the validation accuracy of those weights; without,
    both are ``None`` and the weights of the last epoch are tested.
    """

    test_acc: float
    seconds_per_epoch: float
    history: dict[str, list[float]]
    best_epoch: int | None = None
    val_acc: float | None = None


def _graph_scores(model: nn.Module, batches: Sequence[GraphBatch]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) over graph batches."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for b in batches:
            out = model(b.x, b.edge_index, b.batch, b.num_graphs)
            loss += F.cross_entropy(out, b.y, reduction="sum").item()
            correct += int((out.argmax(1) == b.y).sum())
            count += b.num_graphs
    return loss / count, correct / count


def fit_graphs(model: nn.Module, train_graphs: Sequence, test_graphs: Sequence, epochs: int = 100,
               batch_size: int = 32, lr: float = 0.01, weight_decay: float = 0.0, device=None,
               seed: int = 0, reshuffle: bool = True, progress: bool = True,
               desc: str = "train", val_graphs: Sequence | None = None,
               patience: int | None = None) -> GraphFitResult:
    """Mini-batch graph classification: Adam on the cross-entropy of the graph scores.

    Graphs are PyG ``Data`` objects or ``(x, edge_index, y)`` tuples with one label each.
    Each epoch shuffles the training graphs (generator seeded with ``seed``), builds
    block-diagonal batches with :func:`block_diagonal_batch` and takes one step per batch.
    With ``reshuffle=False`` the batches are drawn once and only their order changes from
    epoch to epoch: much faster on CPU, since each batch's Â is then built only once.
    ``model(x, edge_index, batch, num_graphs)`` must return ``(m, C)`` scores.

    Without ``val_graphs`` the test graphs are evaluated once, after the last epoch. With
    ``val_graphs`` the model is evaluated on them after every epoch (``history`` gains
    ``val_loss`` and ``val_acc``) and the weights of the best epoch are kept: highest
    validation accuracy, ties broken by the lower validation loss, then by the earlier
    epoch. With ``patience``, training stops once that many epochs have passed without
    a new best. The test graphs are evaluated once, with the kept weights: they take no
    part in the choice.
    """
    from tqdm.auto import tqdm

    if patience is not None and (val_graphs is None or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience needs val_graphs and a positive int, got {patience!r}")
    device = device if device is not None else next(model.parameters()).device
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    test = [b.to(device) for b in graph_batches(test_graphs, 256)]
    val = None if val_graphs is None else [b.to(device) for b in graph_batches(val_graphs, 256)]
    hist: dict[str, list[float]] = {"loss": [], "train_acc": []}
    if val is not None:
        hist.update(val_loss=[], val_acc=[])
    best, best_key, best_state = None, None, None
    fixed = None if reshuffle else [b.to(device) for b in
                                    graph_batches(train_graphs, batch_size, shuffle=True, generator=gen)]
    start = time.perf_counter()
    for _ in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        model.train()
        total, correct, count = 0.0, 0, 0
        if fixed is None:
            epoch_batches = graph_batches(train_graphs, batch_size, shuffle=True, generator=gen)
        else:
            epoch_batches = [fixed[i] for i in torch.randperm(len(fixed), generator=gen).tolist()]
        for b in epoch_batches:
            b = b.to(device)
            out = model(b.x, b.edge_index, b.batch, b.num_graphs)
            loss = F.cross_entropy(out, b.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * b.num_graphs
            correct += int((out.argmax(1) == b.y).sum())
            count += b.num_graphs
        hist["loss"].append(total / count)
        hist["train_acc"].append(correct / count)
        if val is not None:
            val_loss, val_acc = _graph_scores(model, val)
            hist["val_loss"].append(val_loss)
            hist["val_acc"].append(val_acc)
            if best_key is None or (-val_acc, val_loss) < best_key:
                best, best_key = len(hist["loss"]), (-val_acc, val_loss)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif patience is not None and len(hist["loss"]) - best >= patience:
                break
    seconds = (time.perf_counter() - start) / max(len(hist["loss"]), 1)
    if best_state is not None:
        model.load_state_dict(best_state)
    _, test_acc = _graph_scores(model, test)
    return GraphFitResult(test_acc=test_acc, seconds_per_epoch=seconds, history=hist, best_epoch=best,
                          val_acc=None if best_key is None else -best_key[0])


# ---------------------------------------------------------------------------
# Diagnostics: over-smoothing and the Weisfeiler-Lehman test

def dirichlet_energy(x: torch.Tensor, edge_index: torch.Tensor, relative: bool = False) -> torch.Tensor:
    """Dirichlet energy of node features with the GCN normalisation (a 0-dim tensor).

        E(X) = tr(Xᵀ (I − Â) X) = ½ Σ_i Σ_{j ∈ N(i) ∪ {i}} || x_i/√d̃_i − x_j/√d̃_j ||²

    with Â and d̃ (degrees of A + I) of (5.2), for an undirected ``edge_index`` (both
    directions stored). It is zero exactly when, on each connected component,
    ``X = D̃^{1/2} 1 cᵀ``: the eigenvectors of Â for the eigenvalue 1, towards which
    repeated products with Â drive the features (over-smoothing). With
    ``relative=True`` it is divided by ``||X||_F²`` (a Rayleigh quotient in ``[0, 2)``),
    which removes the effect of the features' overall scale. ``x``: ``(n, d)``.
    Computed as ``||X||_F² − <X, Â X>`` in float64 (float32 on MPS), clamped at 0.
    """
    graphs.check_features(x)
    n = x.shape[0]
    dtype = torch.float32 if x.device.type == "mps" else torch.float64   # MPS has no float64
    ei = graphs.add_self_loops(edge_index, n)
    inv_sqrt = graphs.degree(ei[1], n, dtype=dtype).pow(-0.5)
    w = inv_sqrt[ei[0]] * inv_sqrt[ei[1]]
    a_hat = torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), w, (n, n), check_invariants=False).coalesce()
    xd = x.to(dtype)
    # tr(Xᵀ X) − tr(Xᵀ Â X): one sparse product instead of an (E, d) gather
    norm2 = xd.pow(2).sum()
    energy = (norm2 - (xd * torch.sparse.mm(a_hat, xd)).sum()).clamp_min(0.0)
    if relative:
        energy = energy / norm2.clamp_min(torch.finfo(dtype).tiny)
    energy = energy.to(x.dtype)
    return energy


def wl_colors(edge_index: torch.Tensor, num_nodes: int, iterations: int = 3,
              initial: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """1-WL colour refinement (Weisfeiler-Lehman): ``(num_nodes,)`` integer colours.

    Start from ``initial`` colours (default: all equal) and repeat ``iterations`` times
    ``c_i <- HASH(c_i, {{c_j : j in N(i)}})`` with N(i) the sources of the edges into i;
    the hash is injective: new colours are numbered 0, 1, ... in the sorted order of the
    distinct signatures (old colour, sorted neighbour colours). Colours are only
    comparable within one call: compare two graphs by colouring their disjoint union
    (see :func:`wl_equivalent`).
    """
    graphs.check_edge_index(edge_index, num_nodes)
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    colors = [0] * num_nodes if initial is None else [int(c) for c in initial]
    if len(colors) != num_nodes:
        raise ValueError(f"initial has {len(colors)} colours for {num_nodes} nodes")
    neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for j, i in edge_index.t().tolist():
        neighbours[i].append(j)
    for _ in range(iterations):
        signatures = [(colors[i], tuple(sorted(colors[j] for j in neighbours[i]))) for i in range(num_nodes)]
        palette = {s: k for k, s in enumerate(sorted(set(signatures)))}
        colors = [palette[s] for s in signatures]
    return torch.tensor(colors, dtype=torch.long)


def wl_equivalent(graph_a, graph_b, iterations: int | None = None) -> bool:
    """True if 1-WL cannot tell two graphs apart (same colour histograms at every round).

    Graphs are ``(edge_index, num_nodes)`` pairs. They are coloured together as one
    disjoint union for ``iterations`` rounds (default: ``n_a + n_b``, enough for the
    partition to stabilise); the histograms are compared after every round.
    """
    (ea, na), (eb, nb) = graph_a, graph_b
    union = torch.cat([ea, eb + na], dim=1)
    rounds = na + nb if iterations is None else iterations
    for t in range(rounds + 1):
        c = wl_colors(union, na + nb, t).tolist()
        if Counter(c[:na]) != Counter(c[na:]):
            return False
    return True
