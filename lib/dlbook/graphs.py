"""Graph utilities shared by Part IV (chapters 12-14).

A graph with ``n`` nodes is stored as PyTorch Geometric does: node features ``x`` of
shape ``(n, d)`` and an ``edge_index`` of shape ``(2, E)`` whose column ``(j, i)`` is an
edge from source ``j`` to target ``i``. Messages flow from ``edge_index[0]`` to
``edge_index[1]``; a node aggregates over its incoming edges. Undirected graphs store
both directions.

The functions here are the matrix pieces of message passing (5.1) and of the GCN
normalisation (5.2) in Baggag & Saad: degrees, self-loops, the dense and sparse
normalised adjacency, scatter aggregation and the softmax over a node's neighbours,
plus a small full-batch training loop for node classification.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

REDUCTIONS = ("sum", "mean", "max")


def check_features(x: torch.Tensor, name: str = "x", allow_sparse: bool = False) -> None:
    """Raise a clear error unless ``x`` is a floating-point ``(n, d)`` node-feature matrix
    (dense, or sparse COO when ``allow_sparse``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided and not (allow_sparse and x.layout == torch.sparse_coo):
        raise TypeError(f"{name} must be a dense tensor{' or a sparse COO tensor' if allow_sparse else ''}, "
                        f"got layout {x.layout}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def feature_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, also for a sparse COO ``x`` (only its stored entries are dropped).

    Same distribution as ``F.dropout``: each entry is zeroed with probability ``p`` and
    the survivors are scaled by ``1/(1-p)``. Dropping a zero changes nothing, so for sparse
    inputs (bag-of-words features) it suffices to drop stored values, as Kipf & Welling's
    code does; the mask is drawn with ``torch.rand``, which is faster on CPU than the
    Bernoulli sampler of ``F.dropout``. Returns the shape and layout of ``x``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if x.layout == torch.sparse_coo:
        x = x.coalesce()
        v = x.values()
        v = v * (torch.rand_like(v) >= p).to(v.dtype) / (1.0 - p)
        return torch.sparse_coo_tensor(x.indices(), v, x.shape, is_coalesced=True, check_invariants=False)
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1.0 - p)


def check_edge_index(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Validate an edge index of shape ``(2, E)`` with entries in ``[0, num_nodes)``.

    Returns the edge index unchanged; raises ``TypeError``/``ValueError`` with a clear
    message otherwise (wrong dtype, wrong shape, negative or out-of-range node ids).
    """
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edge_index must hold integers (int64), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if num_nodes <= 0:
        raise ValueError(f"num_nodes must be positive, got {num_nodes}")
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"edge_index refers to node {lo if lo < 0 else hi}, but the graph has "
                             f"{num_nodes} nodes (valid ids are 0..{num_nodes - 1})")
    return edge_index


def add_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Return ``edge_index`` with one edge ``(i, i)`` per node appended: the edges of A + I.

    Existing self-loops are removed first, so every node ends with exactly one.
    """
    check_edge_index(edge_index, num_nodes)
    keep = edge_index[0] != edge_index[1]
    loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
    return torch.cat([edge_index[:, keep], torch.stack([loops, loops])], dim=1)


def degree(index: torch.Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Count how often each node id occurs in ``index`` (shape ``(E,)``) -> ``(num_nodes,)``.

    With ``index = edge_index[1]`` this is the in-degree, the row sums of A.
    """
    out = torch.zeros(num_nodes, dtype=dtype, device=index.device)
    return out.index_add_(0, index, torch.ones_like(index, dtype=dtype))


def to_dense_adj(edge_index: torch.Tensor, num_nodes: int,
                 edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Dense adjacency ``A`` of shape ``(n, n)`` with ``A[i, j]`` = weight of edge j -> i.

    Row i therefore lists the in-neighbours of node i, so ``A @ X`` sums neighbour
    features, as in (5.4). Repeated edges add up.
    """
    check_edge_index(edge_index, num_nodes)
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1], device=edge_index.device)
    a = torch.zeros(num_nodes, num_nodes, dtype=edge_weight.dtype, device=edge_index.device)
    return a.index_put_((edge_index[1], edge_index[0]), edge_weight, accumulate=True)


def gcn_edge_weights(edge_index: torch.Tensor, num_nodes: int,
                     dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of A + I and their weights ``1/sqrt(d~_i d~_j)``: the entries of Â in (5.2).

    Returns ``(edge_index_with_loops, weight)`` with ``weight`` of shape ``(E + n,)``, in
    ``dtype`` (default: torch's default dtype) on ``edge_index``'s device. Pass the
    features' dtype, so that a float64 model gets a float64 Â.
    """
    ei = add_self_loops(edge_index, num_nodes)
    deg = degree(ei[1], num_nodes, dtype=dtype or torch.get_default_dtype())
    inv_sqrt = deg.pow(-0.5)
    return ei, inv_sqrt[ei[0]] * inv_sqrt[ei[1]]


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int, sparse: bool = False,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Â = D̃^{-1/2} (A + I) D̃^{-1/2}, equation (5.2), of shape ``(n, n)``.

    ``sparse=False`` returns a dense matrix; ``sparse=True`` a ``torch.sparse_coo_tensor``
    (coalesced) with the same entries, for graphs too large for a dense ``n x n``.
    Built in ``dtype`` (default: torch's default dtype) on ``edge_index``'s device.
    """
    ei, w = gcn_edge_weights(edge_index, num_nodes, dtype=dtype)
    if sparse:
        return torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), w, (num_nodes, num_nodes),
                                       check_invariants=True).coalesce()
    return to_dense_adj(ei, num_nodes, w)


def aggregate(messages: torch.Tensor, index: torch.Tensor, num_nodes: int, reduce: str = "sum") -> torch.Tensor:
    """AGGREGATE of (5.1): combine the messages ``(E, d)`` arriving at each target node.

    ``index`` (shape ``(E,)``) names the target of each message. ``"sum"`` uses
    ``index_add_``; ``"mean"`` divides by the in-degree; ``"max"`` uses
    ``scatter_reduce``. Nodes that receive no message get zeros. Returns ``(num_nodes, d)``.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if messages.shape[0] != index.shape[0]:
        raise ValueError(f"{messages.shape[0]} messages but {index.shape[0]} target indices")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
        raise ValueError(f"target index out of range for {num_nodes} nodes")
    shape = (num_nodes,) + tuple(messages.shape[1:])
    out = torch.zeros(shape, dtype=messages.dtype, device=messages.device)
    if reduce == "max":
        idx = index.view(-1, *([1] * (messages.dim() - 1))).expand_as(messages)
        return out.scatter_reduce(0, idx, messages, reduce="amax", include_self=False)
    out.index_add_(0, index, messages)
    if reduce == "mean":
        count = degree(index, num_nodes, dtype=messages.dtype).clamp(min=1)
        out = out / count.view(-1, *([1] * (messages.dim() - 1)))
    return out


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of edge ``scores`` (shape ``(E,)`` or ``(E, H)``) over edges sharing a target.

    alpha_ij = exp(e_ij) / sum_{k in N(i)} exp(e_ik), the normalisation of GAT (5.12).
    The per-node maximum is subtracted first for numerical stability.
    """
    if scores.shape[0] != index.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores but {index.shape[0]} target indices")
    idx = index.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    shape = (num_nodes,) + tuple(scores.shape[1:])
    node_max = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device)
    node_max = node_max.scatter_reduce(0, idx, scores, reduce="amax", include_self=True)
    e = (scores - node_max.gather(0, idx)).exp()
    denom = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add_(0, index, e)
    return e / denom.gather(0, idx)


@dataclass
class NodeResult:
    """Outcome of :func:`fit_nodes`: accuracies at the epoch of best validation accuracy."""

    test_acc: float
    val_acc: float
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    history: dict[str, list[float]] = field(default_factory=dict)


def masked_accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of nodes in ``mask`` whose arg-max prediction equals the label."""
    return (logits[mask].argmax(-1) == y[mask]).float().mean().item()


def fit_nodes(model: nn.Module, data, epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
              patience: int | None = None, forward: Callable | None = None, device=None,
              progress: bool = True, desc: str = "train",
              train_epoch: Callable | None = None) -> NodeResult:
    """Full-batch semi-supervised node classification (Kipf & Welling's protocol).

    ``data`` has ``x``, ``edge_index``, ``y`` and boolean ``train_mask``, ``val_mask``,
    ``test_mask``. Each epoch is one Adam step on the cross-entropy of the training
    nodes; the model state with the best validation accuracy (ties broken by lower
    validation loss) is restored at the end and its test accuracy reported. Training
    stops early after ``patience`` epochs without improvement (``None``: never).
    ``forward(model, data)`` overrides the default call ``model(data.x, data.edge_index)``.
    ``train_epoch(model, data, optimizer)`` replaces the one full-batch step of an epoch and
    returns the epoch's training loss (mini-batch training,
    :func:`dlbook.graphsage.fit_minibatch`); evaluation and model selection stay the same.
    """
    from tqdm.auto import tqdm

    device = device if device is not None else data.x.device
    data = data.to(device)
    model = model.to(device)
    call = forward or (lambda m, d: m(d.x, d.edge_index))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    best = (-1.0, float("inf"))
    best_state, best_epoch, waited = None, 0, 0
    hist: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_acc": []}
    start = time.perf_counter()
    epoch = 0
    for epoch in tqdm(range(1, epochs + 1), desc=desc, leave=False, disable=not progress):
        model.train()
        if train_epoch is not None:
            loss = train_epoch(model, data, opt)
        else:
            opt.zero_grad()
            out = call(model, data)
            loss = loss_fn(out[data.train_mask], data.y[data.train_mask])
            loss.backward()
            opt.step()
            loss = loss.item()
        model.eval()
        with torch.no_grad():
            out = call(model, data)
            val_loss = loss_fn(out[data.val_mask], data.y[data.val_mask]).item()
            val_acc = masked_accuracy(out, data.y, data.val_mask)
        hist["loss"].append(float(loss))
        hist["val_loss"].append(val_loss)
        hist["val_acc"].append(val_acc)
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch, waited = (val_acc, val_loss), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    seconds = (time.perf_counter() - start) / max(epoch, 1)
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        out = call(model, data)
    return NodeResult(test_acc=masked_accuracy(out, data.y, data.test_mask), val_acc=best[0],
                      best_epoch=best_epoch, epochs_run=epoch, seconds_per_epoch=seconds, history=hist)
