"""Graph transformers (Baggag & Saad §5.5, equations (5.14)-(5.19) and Table 3).

Graphs follow :mod:`dlbook.graphs`: node features ``x`` of shape ``(n, d)`` and a dense
adjacency ``adj`` of shape ``(n, n)`` with ``adj[i, j]`` the weight of the edge j -> i
(:func:`dlbook.graphs.to_dense_adj`). A mini-batch of graphs is one block-diagonal graph
(5.5); ``batch`` (shape ``(n,)``) names each node's graph and attention is never allowed
between nodes of different graphs.

The pieces:

* Laplacian eigenvector positional encodings: the eigenvectors of the ``k`` smallest
  non-trivial eigenvalues of ``L = I - D^{-1/2} A D^{-1/2}``; an eigenvector is only
  defined up to its sign, so training flips the signs at random
  (:func:`random_sign_flip`), as Dwivedi & Bresson do.
* One graph attention head (5.18) ``softmax(A_g ⊙ Q K^T / sqrt(d_head)) V`` and the
  Hadamard variant (5.19) ``(A_g ⊙ softmax(Q K^T / sqrt(d_head))) V``. The ``-inf``
  entries of ``A_g`` off the graph are not a multiplication (a negative score times
  ``-inf`` would be ``+inf``): they are a *mask*. Here the scores of the edges
  (self-loops included) are multiplied by their weight ``A_g(i, j)`` and all other
  scores are set to ``-inf`` before the softmax. For an unweighted graph this is plain
  masked attention, :func:`dlbook.attention.attention` with the mask ``A + I != 0``.
* :class:`GraphMultiHeadAttention` (5.17): the heads concatenated and multiplied by W_O.
* :class:`GTLayer` (5.15)-(5.16) with post- or pre-normalisation (Table 3) and
  LayerNorm or BatchNorm, and :class:`GraphTransformer`, the stack (5.14).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import graphs
from .attention import MultiHeadAttention, attention
from .transformer import FeedForward, make_norm

__all__ = ["laplacian", "laplacian_pe", "random_sign_flip", "same_graph_mask", "graph_head_attention",
           "GraphMultiHeadAttention", "GTLayer", "GraphTransformer", "grid_graph", "hop_distances",
           "nearest_marker_task", "train_node_task", "node_task_accuracy", "grid_layout", "MODES", "NORMS", "POSITIONS"]

MODES = ("mask", "hadamard", "full")
NORMS = ("layer", "batch", "none")
POSITIONS = ("post", "pre")


# ---------------------------------------------------------------------------
# Laplacian positional encodings

def laplacian(edge_index: torch.Tensor, num_nodes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised Laplacian ``L = I - D^{-1/2} A D^{-1/2}`` as a dense ``(n, n)`` matrix.

    ``A`` is the (unweighted, undirected: store both directions) adjacency of
    ``edge_index`` without self-loops; an isolated node gets ``L_ii = 1``. The
    eigenvalues of L lie in ``[0, 2]``; the multiplicity of 0 is the number of connected
    components, and ``D^{1/2} 1`` is an eigenvector for 0.
    """
    graphs.check_edge_index(edge_index, num_nodes)
    keep = edge_index[0] != edge_index[1]
    a = graphs.to_dense_adj(edge_index[:, keep], num_nodes,
                            torch.ones(int(keep.sum()), dtype=dtype, device=edge_index.device))
    a = (a > 0).to(dtype)
    deg = a.sum(1)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros_like(deg))
    return torch.eye(num_nodes, dtype=dtype, device=a.device) - inv_sqrt[:, None] * a * inv_sqrt[None, :]


def laplacian_pe(edge_index: torch.Tensor, num_nodes: int, k: int, return_eigenvalues: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Laplacian eigenvector positional encoding, shape ``(num_nodes, k)`` (float32).

    Column c is the unit eigenvector of ``L`` (:func:`laplacian`) for the (c+2)-th
    smallest eigenvalue: the first eigenvector (eigenvalue 0, proportional to
    ``D^{1/2} 1``) carries no position and is skipped. Graphs with fewer than ``k + 1``
    nodes get zero columns at the end. Each column is defined only up to a sign (and,
    for a repeated eigenvalue, up to a rotation inside its eigenspace). With
    ``return_eigenvalues=True`` also returns the ``k`` eigenvalues (zeros for padding).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    lap = laplacian(edge_index, num_nodes)
    evals, evecs = torch.linalg.eigh(lap)                    # ascending eigenvalues
    m = min(k, num_nodes - 1)
    pe = torch.zeros(num_nodes, k, dtype=torch.float32, device=lap.device)
    lam = torch.zeros(k, dtype=torch.float32, device=lap.device)
    pe[:, :m] = evecs[:, 1:m + 1].float()
    lam[:m] = evals[1:m + 1].float()
    return (pe, lam) if return_eigenvalues else pe


def random_sign_flip(pe: torch.Tensor, batch: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply every PE column of every graph by an independent random sign ±1.

    ``pe``: ``(n, k)`` with ``batch`` ``(n,)`` the graph id of each node (None: one
    graph), or ``(B, n, k)`` for B graphs of n nodes each (``batch`` must be None). All
    nodes of one graph share the sign of a column, so the flipped columns are still
    eigenvectors. Used in training only, so the model learns not to rely on the
    arbitrary sign returned by the eigensolver.
    """
    if pe.dim() == 3 and batch is None:
        signs = torch.randint(0, 2, (pe.shape[0], 1, pe.shape[2]), generator=generator,
                              device="cpu").to(pe.device, pe.dtype) * 2 - 1
        return pe * signs
    if pe.dim() != 2:
        raise ValueError(f"pe must have shape (n, k) (or (B, n, k) without batch), got {tuple(pe.shape)}")
    if batch is None:
        batch = torch.zeros(pe.shape[0], dtype=torch.long, device=pe.device)
    if batch.shape != (pe.shape[0],):
        raise ValueError(f"batch must have shape ({pe.shape[0]},), got {tuple(batch.shape)}")
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    signs = torch.randint(0, 2, (num_graphs, pe.shape[1]), generator=generator,
                          device="cpu").to(pe.device, pe.dtype) * 2 - 1
    return pe * signs[batch]


# ---------------------------------------------------------------------------
# Graph attention (5.17)-(5.19)

def same_graph_mask(batch: torch.Tensor) -> torch.Tensor:
    """Boolean ``(n, n)`` mask, True where nodes i and j belong to the same graph."""
    if batch.dim() != 1:
        raise ValueError(f"batch must have shape (n,), got {tuple(batch.shape)}")
    return batch[:, None] == batch[None, :]


def _check_adj(adj: torch.Tensor, n: int) -> None:
    if not isinstance(adj, torch.Tensor):
        raise TypeError(f"adj must be a dense torch.Tensor (n, n), got {type(adj).__name__}")
    if adj.dim() < 2 or adj.shape[-1] != n or adj.shape[-2] != n:
        raise ValueError(f"adj must have shape (..., {n}, {n}) to match {n} nodes, got {tuple(adj.shape)}")
    if not adj.is_floating_point():
        raise TypeError(f"adj must hold floating-point edge weights, got {adj.dtype}")


def graph_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, adj: torch.Tensor,
                         mode: str = "mask", allowed: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One graph attention head: (5.18) for ``mode="mask"``, (5.19) for ``"hadamard"``.

    q, k: ``(..., n, d_head)``; v: ``(..., n, d_v)``; adj: ``(..., n, n)`` edge weights
    (``adj[i, j]`` for j -> i, 0 off the graph); ``allowed``: optional boolean
    ``(..., n, n)`` (e.g. :func:`same_graph_mask`). With ``S = Q K^T / sqrt(d_head)``:

    * ``"mask"`` (5.18): ``A_g`` is adj with its diagonal set to 1 (self-loops);
      ``P = softmax(A_g(i, j) S_ij on the graph, -inf elsewhere)``; rows sum to 1.
    * ``"hadamard"`` (5.19): ``P = adj ⊙ softmax(S)``, the softmax taken over all
      allowed nodes, then multiplied entrywise by the original adjacency (rows no
      longer sum to 1, and a node's own value enters only through the residual).
    * ``"full"``: ``P = softmax(S)`` over all allowed nodes (no graph at all).

    Returns ``(P V, P)`` with shapes ``(..., n, d_v)`` and ``(..., n, n)``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    n = q.shape[-2]
    if k.shape[-2] != n or v.shape[-2] != n:
        raise ValueError(f"graph attention needs as many keys/values as queries (nodes): "
                         f"{n}, {k.shape[-2]}, {v.shape[-2]}")
    _check_adj(adj, n)
    if allowed is not None and allowed.dtype != torch.bool:
        raise TypeError(f"allowed must be a boolean mask, got {allowed.dtype}")
    if mode == "full":
        return attention(q, k, v, mask=allowed)
    if mode == "hadamard":
        _, p = attention(q, k, v, mask=allowed)
        p = adj.to(p.dtype) * p
        return p @ v, p
    eye = torch.eye(n, dtype=torch.bool, device=adj.device)
    a_g = torch.where(eye, torch.ones_like(adj), adj)                  # A_g(i, i) = 1
    on_graph = a_g != 0
    if allowed is not None:
        on_graph = on_graph & allowed
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = (a_g.to(scores.dtype) * scores).masked_fill(~on_graph, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return p @ v, p


class GraphMultiHeadAttention(MultiHeadAttention):
    """gATT of (5.17): ``[gHA_1 || ... || gHA_H] W_O`` with heads from :func:`graph_head_attention`.

    The projections W_Q, W_K, W_V, W_O are those of
    :class:`dlbook.attention.MultiHeadAttention` (``nn.Linear`` layers, heads side by
    side), so ``head_weights()``, ``keep_weights`` and ``from_torch`` work as there.
    forward(x ``(n, d_model)`` or ``(B, n, d_model)``, adj ``(n, n)`` or ``(B, n, n)``,
    allowed) -> same shape as x.
    """

    def __init__(self, d_model: int, n_heads: int, mode: str = "mask", d_head: int | None = None,
                 bias: bool = True, dropout: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(d_model, n_heads, d_head=d_head, bias=bias, dropout=dropout, fast=False)
        self.mode = mode

    def heads(self, x: torch.Tensor, adj: torch.Tensor, allowed: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The concatenated head outputs ``(..., n, H * d_head)`` (before W_O) and the weights."""
        if x.shape[-1] != self.d_model:
            raise ValueError(f"expected inputs with d_model={self.d_model} features, got {x.shape[-1]}")
        _check_adj(adj, x.shape[-2])
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        a = adj.unsqueeze(-3)                                  # broadcast over the heads
        m = None if allowed is None else allowed.unsqueeze(-3)
        y, w = graph_head_attention(q, k, v, a, self.mode, m)
        if self.training and self.dropout > 0:
            y = nn.functional.dropout(w, self.dropout, training=True) @ v
        return y.transpose(-3, -2).flatten(-2), w

    def forward(self, x: torch.Tensor, adj: torch.Tensor, allowed: torch.Tensor | None = None
                ) -> torch.Tensor:
        y, w = self.heads(x, adj, allowed)
        if self.keep_weights:
            self.weights = w.detach()
        return self.out(y)

    def extra_repr(self) -> str:
        return super().extra_repr().replace(", fast=False", "") + f", mode={self.mode}"


class GTLayer(nn.Module):
    """One graph transformer layer GT_l, (5.15)-(5.16) and Table 3.

    post-norm: ``Y = Norm(X + gATT(X))``,  ``X' = Norm(Y + MLP(Y))``;
    pre-norm:  ``Y = X + gATT(Norm(X))``,  ``X' = Y + MLP(Norm(Y))``.

    ``norm`` is ``"layer"`` (LayerNorm (4.16)), ``"batch"`` (BatchNorm over all nodes of
    the batch) or ``"none"``; ``mode`` selects the attention (see
    :func:`graph_head_attention`); the MLP is :class:`dlbook.transformer.FeedForward`
    with ``d_mlp`` hidden units (default ``2 d_model``, as in Dwivedi & Bresson).
    forward(x ``(n, d_model)``, adj ``(n, n)``, allowed) -> ``(n, d_model)``.
    """

    def __init__(self, d_model: int, n_heads: int, mode: str = "mask", norm: str = "layer",
                 norm_position: str = "post", d_mlp: int | None = None, dropout: float = 0.0):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if norm_position not in POSITIONS:
            raise ValueError(f"norm_position must be one of {POSITIONS}, got {norm_position!r}")
        self.pre = norm_position == "pre"
        self.attn = GraphMultiHeadAttention(d_model, n_heads, mode=mode, dropout=dropout)
        self.mlp = FeedForward(d_model, d_mlp or 2 * d_model, dropout=dropout)
        self.norm1, self.norm2 = make_norm(norm, d_model), make_norm(norm, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, allowed: torch.Tensor | None = None
                ) -> torch.Tensor:
        if self.pre:
            y = x + self.dropout(self.attn(self.norm1(x), adj, allowed))
            return y + self.mlp(self.norm2(y))
        y = self.norm1(x + self.dropout(self.attn(x, adj, allowed)))      # (5.15)
        return self.norm2(y + self.mlp(y))                                 # (5.16)


class GraphTransformer(nn.Module):
    """The stack (5.14) with input embedding, Laplacian PE and a node or graph read-out.

    ``h_0 = x W_in + pe W_pe`` (the PE term only when ``pe_dim > 0``; in training the PE
    signs are flipped at random per graph when ``sign_flip``), then ``n_layers``
    :class:`GTLayer`, a final norm for pre-norm stacks, and a linear head. With
    ``readout="node"`` forward returns ``(n, d_out)``; with ``"mean"`` the node states
    are averaged per graph (``batch``) first and it returns ``(num_graphs, d_out)``.

    forward(x ``(n, d_in)``, adj ``(n, n)``, pe ``(n, pe_dim)`` or None, batch ``(n,)``
    or None): one graph, or a block-diagonal batch whose nodes attend only within their
    own graph. For B graphs of the same size n the dense layout x ``(B, n, d_in)``, adj
    ``(B, n, n)``, pe ``(B, n, pe_dim)`` (batch None) is much cheaper: the scores are
    ``B n^2`` instead of ``(B n)^2``.
    """

    def __init__(self, d_in: int, d_model: int, d_out: int, n_layers: int = 2, n_heads: int = 4,
                 pe_dim: int = 0, mode: str = "mask", norm: str = "layer", norm_position: str = "post",
                 dropout: float = 0.0, readout: str = "node", sign_flip: bool = True):
        super().__init__()
        if readout not in ("node", "mean"):
            raise ValueError(f"readout must be 'node' or 'mean', got {readout!r}")
        if n_layers < 1:
            raise ValueError("n_layers must be at least 1")
        self.pe_dim, self.readout, self.sign_flip = pe_dim, readout, sign_flip
        self.embed = nn.Linear(d_in, d_model)
        self.embed_pe = nn.Linear(pe_dim, d_model, bias=False) if pe_dim > 0 else None
        self.layers = nn.ModuleList(GTLayer(d_model, n_heads, mode, norm, norm_position, dropout=dropout)
                                    for _ in range(n_layers))
        self.final_norm = make_norm(norm, d_model) if norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, d_out)

    def node_states(self, x: torch.Tensor, adj: torch.Tensor, pe: torch.Tensor | None = None,
                    batch: torch.Tensor | None = None) -> torch.Tensor:
        """The node representations ``X_L`` ``(n, d_model)`` before the head."""
        if x.dim() not in (2, 3):
            raise ValueError(f"x must have shape (n, d_in) or (B, n, d_in), got {tuple(x.shape)}")
        if x.dim() == 3 and batch is not None:
            raise ValueError("batch is for the block-diagonal layout (n, d_in); dense (B, n, d_in) "
                             "batches need batch=None")
        h = self.embed(x)
        if self.embed_pe is not None:
            if pe is None or pe.shape != x.shape[:-1] + (self.pe_dim,):
                raise ValueError(f"this model needs pe of shape {tuple(x.shape[:-1]) + (self.pe_dim,)}, "
                                 f"got {None if pe is None else tuple(pe.shape)}")
            if self.training and self.sign_flip:
                pe = random_sign_flip(pe, batch)
            h = h + self.embed_pe(pe)
        allowed = None if batch is None else same_graph_mask(batch)
        for layer in self.layers:
            h = layer(h, adj, allowed)
        return self.final_norm(h)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, pe: torch.Tensor | None = None,
                batch: torch.Tensor | None = None) -> torch.Tensor:
        h = self.node_states(x, adj, pe, batch)
        if self.readout == "mean" and x.dim() == 3:
            h = h.mean(-2)
        elif self.readout == "mean":
            b = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if batch is None else batch
            h = graphs.aggregate(h, b, int(b.max()) + 1, reduce="mean")
        return self.head(h)


# ---------------------------------------------------------------------------
# A long-range node task: which of two marked nodes is nearer?

def grid_graph(h: int, w: int) -> torch.Tensor:
    """Edge index ``(2, 2E)`` of the ``h x w`` grid graph (4-neighbours, both directions).

    Node ``r * w + c`` sits in row r, column c.
    """
    if h < 1 or w < 1:
        raise ValueError(f"grid sides must be positive, got {h} x {w}")
    idx = torch.arange(h * w).view(h, w)
    e = torch.cat([torch.stack([idx[:, :-1].flatten(), idx[:, 1:].flatten()]),
                   torch.stack([idx[:-1].flatten(), idx[1:].flatten()])], dim=1)
    return torch.cat([e, e.flip(0)], dim=1)


def hop_distances(adj: torch.Tensor, source: int) -> torch.Tensor:
    """Breadth-first hop counts from ``source`` in the graph of ``adj`` ``(n, n)`` -> ``(n,)``.

    Unreachable nodes get ``n`` (larger than any distance).
    """
    n = adj.shape[0]
    a = adj != 0
    dist = torch.full((n,), n, dtype=torch.long)
    frontier = torch.zeros(n, dtype=torch.bool)
    frontier[source] = True
    dist[source] = 0
    seen, hop = frontier.clone(), 0
    while frontier.any():
        hop += 1
        frontier = a[:, frontier].any(1) & ~seen
        dist[frontier] = hop
        seen |= frontier
    return dist


def nearest_marker_task(n_graphs: int, shapes=((2, 18), (3, 12), (4, 9)), k: int = 8,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor | list]:
    """Graphs for a long-range node classification task, all with the same node count.

    Each graph is a grid of one of ``shapes`` (all with ``h * w = n`` nodes) whose nodes
    are numbered in a random order. Two random nodes are marked, one "red" (feature 0)
    and one "blue" (feature 1); every other node has features (0, 0). A node's label is
    the colour of the marked node nearer to it in hops (1 = blue); nodes at equal
    distance are excluded through ``valid``. Returns stacked tensors
    ``x (N, n, 2)``, ``adj (N, n, n)``, ``pe (N, n, k)`` (:func:`laplacian_pe`),
    ``y``, ``valid``, ``dist`` (hops to the nearer marked node) of shape ``(N, n)``,
    and ``edge_index``, a list of N ``(2, E)`` tensors.
    """
    sizes = {h * w for h, w in shapes}
    if len(sizes) != 1:
        raise ValueError(f"all shapes must have the same number of nodes, got sizes {sorted(sizes)}")
    if n_graphs < 1:
        raise ValueError("n_graphs must be positive")
    n = sizes.pop()
    out: dict[str, list] = {key: [] for key in ("x", "adj", "pe", "y", "valid", "dist", "edge_index")}
    for _ in range(n_graphs):
        h, w = shapes[int(torch.randint(0, len(shapes), (1,), generator=generator))]
        ei = torch.randperm(n, generator=generator)[grid_graph(h, w)]        # random node order
        adj = graphs.to_dense_adj(ei, n)
        red, blue = torch.randperm(n, generator=generator)[:2].tolist()
        d_red, d_blue = hop_distances(adj, red), hop_distances(adj, blue)
        x = torch.zeros(n, 2)
        x[red, 0], x[blue, 1] = 1.0, 1.0
        for key, val in (("x", x), ("adj", adj), ("pe", laplacian_pe(ei, n, k)),
                         ("y", (d_blue < d_red).long()), ("valid", d_blue != d_red),
                         ("dist", torch.minimum(d_red, d_blue)), ("edge_index", ei)):
            out[key].append(val)
    return {key: (val if key == "edge_index" else torch.stack(val)) for key, val in out.items()}


def train_node_task(model: nn.Module, forward, data: dict, epochs: int, batch_size: int = 16,
                    lr: float = 3e-3, desc: str = "train", progress: bool = True) -> list[float]:
    """Adam on the cross-entropy of the valid nodes of :func:`nearest_marker_task` graphs.

    ``forward(model, data, idx)`` returns scores ``(len(idx) * n, 2)`` or
    ``(len(idx), n, 2)`` for the graphs ``idx``. Returns the mean training loss of
    every epoch.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_graphs, losses = data["x"].shape[0], []
    for _ in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        model.train()
        total, count = 0.0, 0
        for idx in torch.randperm(n_graphs).split(batch_size):
            out = forward(model, data, idx).reshape(-1, 2)
            valid = data["valid"][idx].flatten()
            loss = nn.functional.cross_entropy(out[valid], data["y"][idx].flatten()[valid])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        losses.append(total / count)
    return losses


@torch.no_grad()
def node_task_accuracy(model: nn.Module, forward, data: dict, min_dist: int = 0) -> float:
    """Accuracy on the valid nodes whose nearer marked node is at least ``min_dist`` hops away."""
    model.eval()
    out = forward(model, data, torch.arange(data["x"].shape[0])).reshape(-1, 2)
    keep = data["valid"].flatten() & (data["dist"].flatten() >= min_dist)
    return (out.argmax(1) == data["y"].flatten())[keep].float().mean().item()


def grid_layout(adj: torch.Tensor) -> torch.Tensor:
    """Recover (column, row) coordinates ``(n, 2)`` of a renumbered rectangular grid graph.

    Uses hop distances from two corners on the same long side: with ``d0, d2`` the
    distances from corners (0, 0) and (0, w-1), ``column = (d0 - d2 + w - 1) / 2`` and
    ``row = (d0 + d2 - w + 1) / 2``. For drawing only; needs a grid with both sides > 1.
    """
    deg = (adj != 0).sum(1)
    corners = torch.nonzero(deg == 2).flatten()
    if len(corners) != 4:
        raise ValueError("grid_layout needs a rectangular grid graph with both sides > 1")
    d0 = hop_distances(adj, int(corners[0]))
    others = sorted(corners[1:].tolist(), key=lambda c: int(d0[c]))
    c2 = others[1]                                        # the corner at the middle distance
    width = int(d0[c2])
    d2 = hop_distances(adj, c2)
    return torch.stack([(d0 - d2 + width) / 2, (d0 + d2 - width) / 2], dim=1).float()
