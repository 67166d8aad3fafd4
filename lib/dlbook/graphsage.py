"""GraphSAGE: sampled neighbourhoods and the mean aggregator (Baggag & Saad §5.3).

Graphs follow :mod:`dlbook.graphs` (and PyTorch Geometric): node features ``x`` of shape
``(n, d)`` and an ``edge_index`` of shape ``(2, E)`` whose column ``(j, i)`` sends a
message from source ``j`` to target ``i``. One step of Algorithm 4 in the seed is

    x_N(v) = mean_{u in N(v)} x_u                                  (5.9)
    x_v'   = ReLU(W^T [x_v || x_N(v)])                             line 4 of Algorithm 4
    x_v'   = x_v' / ||x_v'||_2                                     line 6 of Algorithm 4

with ``N(v) = sample(v)`` a fixed-size random subset of the neighbours (5.8). The weight
``W`` has shape ``(2 d_in, d_out)``: its top half acts on the node itself, its bottom half
on the neighbour mean. PyTorch Geometric's ``SAGEConv`` writes the same map as
``lin_r(x_v) + lin_l(x_N(v))``, so ``W = [lin_r.weight^T ; lin_l.weight^T]``.

The sampler :func:`sample_neighbors` draws, for every node, ``k`` of its in-neighbours
uniformly *without* replacement, keeping all of them when the node has ``k`` or fewer
(the rule of PyG's neighbour loader); ``replace=True`` instead draws exactly ``k`` with
replacement, the fixed-size rule of Hamilton et al.'s reference code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import graphs

__all__ = ["sample_neighbors", "induced_subgraph", "mean_aggregate", "SAGELayer", "GraphSAGE",
           "Block", "sample_blocks", "fit_minibatch"]


def _check_k(k: int | None) -> None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"sample size k must be a positive int or None (all neighbours), got {k!r}")


def sample_neighbors(edge_index: torch.Tensor, num_nodes: int, k: int | None,
                     replace: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """The sampled neighbourhoods ``N(v) = sample(v)`` of (5.8) as a new edge index.

    ``edge_index``: ``(2, E)``. Returns ``(2, E')`` holding, for every target node ``v``,
    edges from the sampled neighbours to ``v``:

    * ``replace=False`` (default): ``min(k, deg(v))`` distinct in-edges of ``v`` drawn
      uniformly without replacement, so a node with ``k`` or fewer neighbours keeps all;
    * ``replace=True``: exactly ``k`` in-edges drawn uniformly with replacement (repeats
      possible) for every node with at least one neighbour.

    Nodes without in-neighbours get no edges. ``k=None`` returns ``edge_index`` itself
    (the full neighbourhood). The result is sorted by target node.
    """
    graphs.check_edge_index(edge_index, num_nodes)
    _check_k(k)
    if k is None or edge_index.shape[1] == 0:
        return edge_index
    dev = edge_index.device
    dst = edge_index[1]
    deg = graphs.degree(dst, num_nodes, dtype=torch.long)
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=dev)
    ptr[1:] = deg.cumsum(0)
    if replace:
        order = torch.argsort(dst, stable=True)            # edges grouped by target: CSR order
        nodes = torch.nonzero(deg > 0).flatten()
        u = torch.rand(nodes.numel(), k, generator=generator, device=dev)
        pick = ptr[nodes].unsqueeze(1) + (u * deg[nodes].unsqueeze(1)).long()
        return edge_index[:, order[pick.flatten()]]
    # without replacement: shuffle the edges, group them by target (stable sort keeps the
    # shuffled order inside each group) and keep the first k edges of every group
    perm = torch.randperm(edge_index.shape[1], generator=generator, device=dev)
    order = perm[torch.argsort(dst[perm], stable=True)]
    rank = torch.arange(order.numel(), device=dev) - ptr[dst[order]]
    return edge_index[:, order[rank < k]]


def induced_subgraph(edge_index: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The subgraph induced by the nodes with ``keep[v] = True``, relabelled ``0..m-1``.

    ``keep``: boolean ``(n,)``. Returns ``(sub_edge_index, nodes)``: the edges with both
    ends kept, in the new numbering, and ``nodes`` (shape ``(m,)``), the old id of every
    new node, so that ``x[nodes]`` are the subgraph's features.
    """
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.dim() != 1:
        raise TypeError("keep must be a boolean tensor of shape (n,)")
    n = keep.numel()
    graphs.check_edge_index(edge_index, n)
    nodes = torch.nonzero(keep).flatten()
    new_id = torch.full((n,), -1, dtype=torch.long, device=keep.device)
    new_id[nodes] = torch.arange(nodes.numel(), device=keep.device)
    both = keep[edge_index[0]] & keep[edge_index[1]]
    return new_id[edge_index[:, both]], nodes


def mean_aggregate(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """The mean aggregator (5.9): ``x_N(v) = (1/|N(v)|) sum_{u in N(v)} x_u``.

    ``x``: ``(n, d)``; ``edge_index``: ``(2, E)`` (the possibly sampled neighbourhoods;
    a neighbour drawn twice counts twice). Returns ``(n, d)``; nodes without neighbours get
    zeros.
    """
    graphs.check_features(x, allow_sparse=True)
    graphs.check_edge_index(edge_index, x.shape[0])
    return graphs.aggregate(x[edge_index[0]], edge_index[1], x.shape[0], reduce="mean")


class SAGELayer(nn.Module):
    """One step of Algorithm 4: ``x_v' = normalise(act(W^T [x_v || x_N(v)] + b))``.

    ``weight`` has shape ``(2 d_in, d_out)`` (rows ``0..d_in-1`` act on ``x_v``, the rest
    on the neighbour mean), ``bias`` shape ``(d_out,)`` or ``None``. ``activation`` is
    ``"relu"`` (Algorithm 4) or ``None``; ``normalize=True`` divides every output row by
    its Euclidean norm (line 6). ``forward(x, edge_index)`` maps ``(n, d_in)`` to
    ``(n, d_out)``; pass a sampled edge index (:func:`sample_neighbors`) for (5.8).
    Because the mean is linear, the forward pass projects before averaging,
    ``x_v W_self + mean_u (x_u W_neigh)``, which gathers ``d_out`` numbers per edge
    instead of ``d_in`` (the same function, cheaper when ``d_out < d_in``).
    """

    def __init__(self, d_in: int, d_out: int, activation: str | None = "relu", normalize: bool = True,
                 bias: bool = True):
        super().__init__()
        if d_in < 1 or d_out < 1:
            raise ValueError(f"d_in and d_out must be positive, got {d_in}, {d_out}")
        if activation not in ("relu", None):
            raise ValueError(f"activation must be 'relu' or None, got {activation!r}")
        self.d_in, self.d_out = d_in, d_out
        self.activation, self.normalize = activation, normalize
        self.weight = nn.Parameter(torch.empty(2 * d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the initialisation of the two nn.Linear layers of SAGEConv (uniform, fan-in d_in)
        bound = self.d_in ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        graphs.check_features(x, allow_sparse=True)
        if x.shape[1] != self.d_in:
            raise ValueError(f"x has {x.shape[1]} features, the layer expects {self.d_in}")
        # W^T [x_v || x_N(v)] = W_self^T x_v + W_neigh^T mean(x_u): the mean is linear, so we
        # project first and average d_out-dimensional rows instead of d_in-dimensional ones
        w_self, w_neigh = self.weight[: self.d_in], self.weight[self.d_in:]
        xw = x @ torch.cat([w_self, w_neigh], dim=1)                       # (n, 2 d_out)
        h = xw[:, : self.d_out] + mean_aggregate(xw[:, self.d_out:], edge_index)
        if self.bias is not None:
            h = h + self.bias
        if self.activation == "relu":
            h = F.relu(h)
        if self.normalize:
            h = F.normalize(h, p=2.0, dim=1)
        return h

    @torch.no_grad()
    def copy_from_pyg(self, conv: nn.Module) -> "SAGELayer":
        """Copy the weights of a ``torch_geometric.nn.SAGEConv`` (mean aggregation, root
        weight): ``W = [lin_r.weight^T ; lin_l.weight^T]``, ``b = lin_l.bias``."""
        if conv.lin_l.weight.shape != (self.d_out, self.d_in) or getattr(conv, "lin_r", None) is None:
            raise ValueError("SAGEConv must have root_weight=True and the same (d_in, d_out)")
        self.weight.copy_(torch.cat([conv.lin_r.weight.t(), conv.lin_l.weight.t()], dim=0))
        if self.bias is not None:
            if conv.lin_l.bias is None:
                raise ValueError("this layer has a bias but the SAGEConv has none")
            self.bias.copy_(conv.lin_l.bias)
        return self

    def extra_repr(self) -> str:
        return (f"{self.d_in}, {self.d_out}, activation={self.activation}, normalize={self.normalize}, "
                f"bias={self.bias is not None}")


class GraphSAGE(nn.Module):
    """Algorithm 4 with depth K = ``len(sizes)`` followed by a linear classifier.

    Layer widths ``d_in -> d_hidden -> ... -> d_hidden``; every layer applies ReLU and the
    L2 normalisation (the embeddings ``z_v`` of Algorithm 4), then ``nn.Linear(d_hidden,
    d_out)`` gives class scores. ``sizes[l]`` is the sample size of layer ``l + 1``
    (``None`` = all neighbours). In training mode every layer draws a fresh sample of the
    neighbourhoods at every call; in evaluation mode the full neighbourhoods are used
    unless ``sample_in_eval=True``. Dropout ``dropout`` acts on every layer's input
    (:func:`dlbook.graphs.feature_dropout`, so ``x`` may be a sparse COO tensor).
    ``forward(x, edge_index)`` maps ``(n, d_in)`` to scores ``(n, d_out)``.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, sizes: Sequence[int | None] = (25, 10),
                 dropout: float = 0.5, replace: bool = False, sample_in_eval: bool = False):
        super().__init__()
        if len(sizes) < 1:
            raise ValueError("sizes must list one sample size per layer")
        for k in sizes:
            _check_k(k)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = [d_in] + [d_hidden] * len(sizes)
        self.layers = nn.ModuleList(SAGELayer(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.classifier = nn.Linear(d_hidden, d_out)
        self.sizes, self.dropout = list(sizes), dropout
        self.replace, self.sample_in_eval = replace, sample_in_eval

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The embeddings ``z_v`` of Algorithm 4, shape ``(n, d_hidden)``, unit rows."""
        n = x.shape[0]
        graphs.check_edge_index(edge_index, n)
        sample = self.training or self.sample_in_eval
        for k, layer in zip(self.sizes, self.layers):
            ei = sample_neighbors(edge_index, n, k, replace=self.replace) if sample else edge_index
            x = layer(graphs.feature_dropout(x, self.dropout, self.training), ei)
        return x

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        z = self.embed(x, edge_index)
        return self.classifier(F.dropout(z, self.dropout, self.training))

    def forward_blocks(self, x: torch.Tensor, blocks: Sequence["Block"]) -> torch.Tensor:
        """Scores of a mini-batch's target nodes from its sampled computation graph.

        ``x``: ``(len(nodes), d_in)`` features of the nodes returned by
        :func:`sample_blocks` (dense or sparse COO); ``blocks[l]`` feeds layer ``l + 1``.
        Layer ``l + 1`` reads the first ``blocks[l].n_src`` rows and keeps the first
        ``blocks[l].n_dst``; the result has shape ``(blocks[-1].n_dst, d_out)``. The sample
        sizes are those the blocks were drawn with, not ``self.sizes``.
        """
        if len(blocks) != len(self.layers):
            raise ValueError(f"{len(blocks)} blocks for a model with {len(self.layers)} layers")
        if x.shape[0] != blocks[0].n_src:
            raise ValueError(f"x has {x.shape[0]} rows, the first block reads {blocks[0].n_src}")
        h = x
        for block, layer in zip(blocks, self.layers):
            if h.shape[0] != block.n_src:
                h = h[: block.n_src]
            graphs.check_edge_index(block.edge_index, block.n_src)
            h = layer(graphs.feature_dropout(h, self.dropout, self.training),
                      block.edge_index)[: block.n_dst]
        return self.classifier(F.dropout(h, self.dropout, self.training))


@dataclass
class Block:
    """The messages of one layer of a sampled mini-batch (Hamilton et al., Algorithm 2).

    Local node ids ``0 .. n_src - 1`` are the nodes the layer reads, of which the first
    ``n_dst`` are the nodes it computes; ``edge_index`` ``(2, E_l)`` holds local ids, each
    column a message from a source ``< n_src`` to a target ``< n_dst``.
    """

    n_src: int
    n_dst: int
    edge_index: torch.Tensor


def sample_blocks(targets: torch.Tensor, edge_index: torch.Tensor, num_nodes: int,
                  sizes: Sequence[int | None], replace: bool = False,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[Block]]:
    """Sample the K-hop computation graph of a mini-batch, from the targets outward.

    With ``B^K`` = ``targets`` and ``k = K, ..., 1``: draw ``sizes[k - 1]`` in-neighbours
    of every node of ``B^k`` (:func:`sample_neighbors`), and let ``B^(k-1)`` be ``B^k``
    together with the sampled sources. Layer ``k`` then computes the nodes of ``B^k`` from
    those of ``B^(k-1)``; only ``B^0`` needs input features. Returns ``nodes`` (global
    ids of ``B^0``, ordered so that every ``B^k`` is a prefix, the targets first) and
    the blocks of layers ``1 .. K``. The number of input rows and messages of a step is
    bounded by ``|targets| * prod(sizes)``-like products whatever the size of the graph.
    (This implementation finds the edges into ``B^k`` by filtering the whole edge list,
    ``O(|E|)`` per step; a CSR index of the graph would make the sampling itself
    independent of the graph's size as well.)
    """
    graphs.check_edge_index(edge_index, num_nodes)
    if targets.dim() != 1 or targets.numel() == 0 or targets.dtype != torch.long:
        raise ValueError("targets must be a non-empty 1-D int64 tensor of node ids")
    if int(targets.min()) < 0 or int(targets.max()) >= num_nodes:
        raise ValueError(f"targets must lie in [0, {num_nodes})")
    if targets.unique().numel() != targets.numel():
        raise ValueError("targets must be distinct")
    if len(sizes) < 1:
        raise ValueError("sizes must list one sample size per layer")
    dev = edge_index.device
    local = torch.full((num_nodes,), -1, dtype=torch.long, device=dev)
    local[targets] = torch.arange(targets.numel(), device=dev)
    nodes, blocks = targets.to(dev), []
    for k in reversed(list(sizes)):
        n_dst = nodes.numel()
        dst_local = local[edge_index[1]]
        into = edge_index[:, (dst_local >= 0) & (dst_local < n_dst)]   # edges into B^k
        sampled = sample_neighbors(into, num_nodes, k, replace=replace, generator=generator)
        new = sampled[0][local[sampled[0]] < 0].unique()
        local[new] = torch.arange(nodes.numel(), nodes.numel() + new.numel(), device=dev)
        nodes = torch.cat([nodes, new])
        blocks.append(Block(nodes.numel(), n_dst, local[sampled]))
    return nodes, blocks[::-1]


def fit_minibatch(model: GraphSAGE, data, batch_size: int, epochs: int = 200, lr: float = 0.01,
                  weight_decay: float = 5e-4, patience: int | None = None, device=None,
                  generator: torch.Generator | None = None, progress: bool = True,
                  desc: str = "mini-batch") -> graphs.NodeResult:
    """Mini-batch training on sampled computation graphs (Hamilton et al., Algorithm 2).

    Every epoch shuffles the training nodes into batches of ``batch_size`` targets; each
    batch is one Adam step on :func:`sample_blocks` drawn with ``model.sizes``. Evaluation
    on the full graph and the choice of the best validation epoch are those of
    :func:`dlbook.graphs.fit_nodes`, which runs this epoch in place of its full-batch
    step. ``history`` adds ``nodes_per_step`` and ``messages_per_step`` (the input rows
    and the sampled edges of each step) and ``train_seconds`` (the sampling and training
    steps of each epoch, without evaluation).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    cost: dict[str, list[float]] = {"train_seconds": [], "nodes_per_step": [],
                                    "messages_per_step": []}
    dense: dict[str, torch.Tensor] = {}               # the features, densified once

    def train_epoch(model: GraphSAGE, data, opt: torch.optim.Optimizer) -> float:
        t0, total = time.perf_counter(), 0.0
        if "x" not in dense:
            dense["x"] = data.x.to_dense() if data.x.is_sparse else data.x
        x = dense["x"]
        train_nodes = data.train_mask.nonzero().flatten()
        order = train_nodes[torch.randperm(train_nodes.numel(), generator=generator)
                            .to(train_nodes.device)]
        for targets in order.split(batch_size):
            nodes, blocks = sample_blocks(targets, data.edge_index, data.num_nodes,
                                          model.sizes, replace=model.replace,
                                          generator=generator)
            loss = F.cross_entropy(model.forward_blocks(x[nodes], blocks), data.y[targets])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * targets.numel()
            cost["nodes_per_step"].append(nodes.numel())
            cost["messages_per_step"].append(sum(b.edge_index.shape[1] for b in blocks))
        cost["train_seconds"].append(time.perf_counter() - t0)
        return total / train_nodes.numel()

    result = graphs.fit_nodes(model, data, epochs=epochs, lr=lr, weight_decay=weight_decay,
                              patience=patience, device=device, progress=progress,
                              desc=desc, train_epoch=train_epoch)
    result.history.update(cost)
    return result
