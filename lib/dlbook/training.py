"""One training loop for the whole book, with progress bars and a per-epoch history.

The loop is deliberately plain: for each mini-batch ``(x, y)``,
``loss = loss_fn(model(x), y)``, ``loss.backward()``, ``optimizer.step()``.
Everything a chapter wants to watch is a *metric*: a function
``metric(outputs, targets) -> float`` averaged over the batches of an epoch
(weighted by batch size), recorded in :class:`History` for the training data
and, if given, the validation data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

Metric = Callable[[torch.Tensor, torch.Tensor], float]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the integer label.

    ``outputs``: ``(n, C)`` scores; ``targets``: ``(n,)`` class indices.
    """
    if outputs.ndim != 2 or targets.ndim != 1 or outputs.shape[0] != targets.shape[0]:
        raise ValueError(f"accuracy expects outputs (n, C) and targets (n,), "
                         f"got {tuple(outputs.shape)} and {tuple(targets.shape)}")
    return (outputs.argmax(dim=1) == targets).float().mean().item()


@dataclass
class History:
    """Per-epoch values: ``history["train_loss"]`` is a list with one float per epoch."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def append(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(float(value))

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.values:
            raise KeyError(f"no {name!r} in the history; it has {', '.join(self.values) or 'nothing'}")
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def last(self, name: str) -> float:
        return self[name][-1]

    @property
    def epochs(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)


def _check_metrics(metrics: Mapping[str, Metric] | None) -> dict[str, Metric]:
    metrics = dict(metrics or {})
    for name, fn in metrics.items():
        if not callable(fn):
            raise TypeError(f"metric {name!r} is not callable")
        if name == "loss":
            raise ValueError("'loss' is recorded by the loop itself; give the metric another name")
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, loss_fn: Callable | None = None,
             metrics: Mapping[str, Metric] | None = None, device=None) -> dict[str, float]:
    """Averages of ``loss`` (if ``loss_fn``) and each metric over ``batches``, model in eval mode."""
    metrics = _check_metrics(metrics)
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model(x)
        n = x.shape[0]
        if loss_fn is not None:
            sums["loss"] = sums.get("loss", 0.0) + loss_fn(out, y).item() * n
        for name, fn in metrics.items():
            sums[name] = sums.get(name, 0.0) + fn(out, y) * n
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no batches")
    return {k: v / count for k, v in sums.items()}


def fit(model: nn.Module, train: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
        epochs: int, *, val: Iterable | None = None, metrics: Mapping[str, Metric] | None = None,
        device=None, scheduler=None, progress: bool = True, desc: str = "training") -> History:
    """Train ``model`` for ``epochs`` passes over ``train``; return the :class:`History`.

    The history holds ``train_loss`` and ``train_<metric>`` (averaged over the
    epoch's batches as the model changes), and ``val_loss``/``val_<metric>``
    (measured after the epoch) when ``val`` is given. ``scheduler.step()`` is
    called once per epoch.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    metrics = _check_metrics(metrics)
    device = device if device is not None else next(model.parameters()).device
    model.to(device)
    history = History()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        sums: dict[str, float] = {}
        count = 0
        for x, y in train:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = x.shape[0]
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * n
            with torch.no_grad():
                for name, fn in metrics.items():
                    sums[name] = sums.get(name, 0.0) + fn(out.detach(), y) * n
            count += n
        if count == 0:
            raise ValueError("fit() got an empty training set")
        if scheduler is not None:
            scheduler.step()
        for name, total in sums.items():
            history.append(f"train_{name}", total / count)
        if val is not None:
            for name, value in evaluate(model, val, loss_fn, metrics, device).items():
                history.append(f"val_{name}", value)
        bar.set_postfix({k: f"{v[-1]:.4f}" for k, v in history.values.items()})
    return history


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over in-memory tensors (rows of ``x`` with labels ``y``)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       generator=generator)


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max predictions and targets over ``batches``, both ``(n,)`` on the CPU."""
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for x, y in batches:
        preds.append(model(x.to(device)).argmax(dim=1).cpu())
        targets.append(y.cpu())
    model.train(was_training)
    if not preds:
        raise ValueError("predict() got no batches")
    return torch.cat(preds), torch.cat(targets)


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``M[i, j]`` = number of samples of class ``i`` predicted as ``j``; ``(C, C)`` int64."""
    if preds.shape != targets.shape or preds.ndim != 1:
        raise ValueError(f"preds and targets must be equal-length 1-D tensors, got "
                         f"{tuple(preds.shape)} and {tuple(targets.shape)}")
    if preds.numel() and (min(preds.min(), targets.min()) < 0 or max(preds.max(), targets.max()) >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes})")
    index = targets.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)
