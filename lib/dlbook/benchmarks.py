"""Speed of the book's graph layers against PyTorch Geometric's, measured side by side.

One training step (forward, cross-entropy of the labelled nodes, backward, Adam update)
of a model built from our layers and of the same model built from PyG's layers, on the
same graph and features. The two steps are timed *alternately*, ``repeats`` times each,
so that a change in the machine's load affects both alike; the ratio of the medians is

    speed ratio = median(t_pyg) / median(t_ours)      (> 1: ours is faster).

Run ``python -m dlbook.benchmarks`` for Cora (GCN against ``GCNConv(cached=True)``, GAT
against ``GATConv``); chapters 12 and 13 print the same ratios.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpeedComparison", "compare_steps", "gcn_vs_pyg", "gat_vs_pyg", "main"]


@dataclass
class SpeedComparison:
    """Median seconds per training step of our model and of the reference, and their ratio."""

    ours: float
    reference: float

    @property
    def ratio(self) -> float:
        """``reference / ours``: how many times faster our step is (below 1: slower)."""
        return self.reference / self.ours


def _step(model: nn.Module, x, edge_index, y, mask) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, edge_index)[mask], y[mask]).backward()
        opt.step()

    return step


def compare_steps(ours: nn.Module, reference: nn.Module, x: torch.Tensor, edge_index: torch.Tensor,
                  y: torch.Tensor, mask: torch.Tensor, repeats: int = 20,
                  warmup: int = 3) -> SpeedComparison:
    """Time training steps of ``ours`` and ``reference`` alternately; medians of ``repeats``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    steps = [_step(m, x, edge_index, y, mask) for m in (ours, reference)]
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[i].append(time.perf_counter() - t0)
    return SpeedComparison(statistics.median(times[0]), statistics.median(times[1]))


def _cora(device):
    from . import data

    cora = data.load_planetoid("Cora")
    x = (cora.x / cora.x.sum(1, keepdim=True).clamp(min=1)).to_sparse()
    return (x.to(device), cora.edge_index.to(device), cora.y.to(device),
            cora.train_mask.to(device), cora.num_features)


def gcn_vs_pyg(device="cpu", hidden: int = 16, repeats: int = 20, seed: int = 0) -> SpeedComparison:
    """Our 2-layer :class:`dlbook.gcn.GCN` (sparse Â, cached) against the same network of
    ``GCNConv(cached=True)`` layers, on Cora with row-normalised sparse features."""
    from . import gcn

    x, ei, y, mask, d_in = _cora(device)
    torch.manual_seed(seed)
    ours = gcn.GCN(d_in, hidden, 7, sparse=True).to(device)
    torch.manual_seed(seed)
    reference = gcn.GCN(d_in, hidden, 7, layer="pyg").to(device)
    for conv in reference.modules():
        if hasattr(conv, "cached"):
            conv.cached = True
    return compare_steps(ours, reference, x, ei, y, mask, repeats)


def gat_vs_pyg(device="cpu", repeats: int = 10, seed: int = 0) -> SpeedComparison:
    """Our 2-layer :class:`dlbook.gat.GAT` (8 heads of 8) against the same network of
    ``GATConv`` layers, on Cora with row-normalised sparse features."""
    from . import gat

    x, ei, y, mask, d_in = _cora(device)
    torch.manual_seed(seed)
    ours = gat.GAT(d_in, 8, 7).to(device)
    torch.manual_seed(seed)
    reference = gat.GAT(d_in, 8, 7, layer="pyg").to(device)
    return compare_steps(ours, reference, x, ei, y, mask, repeats)


def main() -> None:
    for name, result in (("GCN vs GCNConv(cached=True)", gcn_vs_pyg()),
                         ("GAT vs GATConv", gat_vs_pyg())):
        print(f"{name}: ours {1000 * result.ours:.1f} ms, PyG {1000 * result.reference:.1f} ms"
              f" per training step; speed ratio {result.ratio:.2f}")


if __name__ == "__main__":
    main()
