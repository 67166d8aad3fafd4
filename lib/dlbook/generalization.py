"""Generalization experiments (chapter 04): the reusable pieces.

* label corruption for the random-label experiments of Zhang et al. (2016/2021);
* random-features regression solved by minimum-norm least squares, the model of
  Belkin et al.'s double-descent curves (2019):
  ``Φ = relu(X W)``, ``β = Φ⁺ Y`` (the pseudo-inverse picks the interpolating
  solution of least norm once the number of features N exceeds the number of
  samples n);
* magnitude pruning with masks and weight rewinding, the ingredients of the
  lottery-ticket procedure of Frankle & Carbin (2018);
* power-law fitting ``L = a x^(-α) + c`` for scaling laws (Kaplan et al., 2020);
* loss-landscape slices along filter-normalised random directions (Li et al., 2018).

Samples are rows, as everywhere in the book: ``X`` is ``(n, d)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------------------
# Random and partially corrupted labels


def corrupt_labels(labels: torch.Tensor, fraction: float, num_classes: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a ``fraction`` of the labels by classes drawn uniformly at random.

    Exactly ``round(fraction * n)`` positions, chosen at random, receive a class
    drawn uniformly from ``{0, ..., C-1}`` (so about ``1/C`` of them keep their
    label by chance, as in Zhang et al.'s "corrupted with probability p").
    ``fraction = 1`` gives completely random labels.

    ``labels``: ``(n,)`` int64. Returns ``(new_labels (n,), changed (n,) bool)``
    where ``changed`` marks the positions that were re-drawn.
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype != torch.int64:
        raise TypeError("labels must be a 1-D int64 tensor")
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    n = labels.numel()
    k = int(round(float(fraction) * n))
    chosen = torch.randperm(n, generator=generator)[:k]
    new = labels.clone()
    new[chosen] = torch.randint(0, num_classes, (k,), generator=generator)
    changed = torch.zeros(n, dtype=torch.bool)
    changed[chosen] = True
    return new, changed


def epochs_to_fit(train_accuracy: Sequence[float], threshold: float = 0.99) -> int | None:
    """The first epoch (1-based) whose training accuracy reaches ``threshold``; ``None`` if never."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    for epoch, acc in enumerate(train_accuracy, start=1):
        if acc >= threshold:
            return epoch
    return None


# ---------------------------------------------------------------------------
# Random features and minimum-norm least squares


def random_feature_weights(d: int, num_features: int, generator: torch.Generator | None = None,
                           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """First-layer weights ``W`` ``(d, N)`` with i.i.d. N(0, 1/d) entries (fixed, never trained)."""
    if not isinstance(d, int) or not isinstance(num_features, int) or d < 1 or num_features < 1:
        raise ValueError(f"d and num_features must be positive ints, got {d!r} and {num_features!r}")
    return torch.randn(d, num_features, generator=generator, dtype=dtype) / math.sqrt(d)


def random_features(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Φ = relu(X W)``: ``X`` ``(n, d)``, ``W`` ``(d, N)`` -> ``Φ`` ``(n, N)``.

    A one-hidden-layer network whose first layer is frozen at random values; only
    the output layer ``β`` ``(N, C)`` is fitted, which makes training a linear
    least-squares problem.
    """
    if x.ndim != 2 or weights.ndim != 2 or x.shape[1] != weights.shape[0]:
        raise ValueError(f"need X (n, d) and W (d, N), got {tuple(x.shape)} and {tuple(weights.shape)}")
    return torch.relu(x.to(weights.dtype) @ weights)


def min_norm_lstsq(phi: torch.Tensor, y: torch.Tensor, ridge: float = 0.0,
                   rcond: float | None = None) -> torch.Tensor:
    """``β = argmin ||β||_F`` among the minimisers of ``||Φβ - Y||_F² + ridge ||β||_F²``.

    Computed from the thin SVD ``Φ = U diag(s) Vᵀ``:
    ``β = V diag(s / (s² + ridge)) Uᵀ Y``. With ``ridge = 0`` this is the
    pseudo-inverse solution ``β = Φ⁺ Y``: singular values below
    ``rcond * s_max`` (default ``max(n, N) * eps``, as ``torch.linalg.pinv``)
    are treated as zero. When ``N >= n`` and ``Φ`` has full row rank, ``Φβ = Y``
    exactly (interpolation) and ``β`` is the interpolant of least norm.

    ``phi``: ``(n, N)``; ``y``: ``(n,)`` or ``(n, C)``. Returns ``(N,)`` or ``(N, C)``.
    """
    if phi.ndim != 2:
        raise ValueError(f"phi must be (n, N), got shape {tuple(phi.shape)}")
    if y.ndim not in (1, 2) or y.shape[0] != phi.shape[0]:
        raise ValueError(f"y must be (n,) or (n, C) with n = {phi.shape[0]}, got {tuple(y.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if not phi.is_floating_point():
        raise TypeError("phi must be a floating-point tensor")
    u, s, vh = torch.linalg.svd(phi, full_matrices=False)
    if ridge > 0:
        inv = s / (s ** 2 + ridge)
    else:
        if rcond is None:
            rcond = max(phi.shape) * torch.finfo(phi.dtype).eps
        keep = s > rcond * s.max() if s.numel() else s > 0
        inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    rhs = y.to(phi.dtype)
    coef = u.T @ rhs
    coef = coef * (inv[:, None] if coef.ndim == 2 else inv)
    return vh.T @ coef


# ---------------------------------------------------------------------------
# Magnitude pruning with masks, and rewinding


def magnitude_prune(weight: torch.Tensor, mask: torch.Tensor | None, fraction: float) -> torch.Tensor:
    """Remove the ``fraction`` of the *remaining* weights with the smallest ``|w|``.

    ``mask`` (same shape as ``weight``, 1 = kept, 0 = pruned; ``None`` = all kept)
    says which weights remain. ``round(fraction * remaining)`` of them, those of
    smallest magnitude, are set to 0 in the returned new mask. This is what
    ``torch.nn.utils.prune.l1_unstructured`` does when applied again to an
    already pruned module.
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if mask is None:
        mask = torch.ones_like(weight)
    if mask.shape != weight.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match weight {tuple(weight.shape)}")
    mask = mask.detach().to(weight.dtype)
    alive = mask.flatten().nonzero().flatten()
    k = int(round(float(fraction) * alive.numel()))
    new = mask.clone().flatten()
    if k > 0:
        magnitudes = weight.detach().abs().flatten()[alive]
        drop = alive[torch.topk(magnitudes, k, largest=False).indices]
        new[drop] = 0
    return new.reshape(weight.shape)


def random_prune(mask: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Like :func:`magnitude_prune` but the removed weights are chosen at random (a baseline)."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    alive = mask.flatten().nonzero().flatten()
    k = int(round(float(fraction) * alive.numel()))
    new = mask.detach().clone().flatten()
    new[alive[torch.randperm(alive.numel(), generator=generator)[:k]]] = 0
    return new.reshape(mask.shape)


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that pruning acts on: the weight matrices (``ndim >= 2``, "weight" in the name).

    Biases are never pruned (they are few). For ``dlbook.mlp.MLP`` the names are
    ``weights.0, weights.1, ...``; for ``nn.Linear`` layers ``<layer>.weight``.
    """
    return {name: p for name, p in model.named_parameters() if p.ndim >= 2 and "weight" in name}


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Multiply each named parameter in place by its mask (pruned weights become exactly 0)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            if name not in params:
                raise KeyError(f"the model has no parameter {name!r}")
            if params[name].shape != m.shape:
                raise ValueError(f"mask for {name!r} is {tuple(m.shape)}, parameter is {tuple(params[name].shape)}")
            params[name].mul_(m.to(params[name].device, params[name].dtype))


def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list:
    """Register hooks that zero the gradient of pruned weights; returns the hook handles.

    With the hooks in place (and the weights masked once with :func:`apply_masks`),
    any optimiser that does not add weight decay keeps the pruned weights at 0.
    """
    params = dict(model.named_parameters())
    handles = []
    for name, m in masks.items():
        m = m.to(params[name].device, params[name].dtype)
        handles.append(params[name].register_hook(lambda g, m=m: g * m))
    return handles


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter (the weights to rewind to)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def rewind(model: nn.Module, weights: Mapping[str, torch.Tensor],
           masks: Mapping[str, torch.Tensor] | None = None) -> None:
    """Reset the parameters to ``weights`` (a :func:`snapshot`), then apply ``masks``."""
    params = dict(model.named_parameters())
    missing = set(params) - set(weights)
    if missing:
        raise KeyError(f"the snapshot lacks {sorted(missing)}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    if masks is not None:
        apply_masks(model, masks)


def sparsity_report(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the masked weights that remain (1.0 = dense)."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("no masks")
    return float(sum(m.sum().item() for m in masks.values()) / total)


# ---------------------------------------------------------------------------
# Power laws


@dataclass(frozen=True)
class PowerLaw:
    """``L(x) = a x^(-alpha) + c``."""

    a: float
    alpha: float
    c: float = 0.0

    def __call__(self, x):
        return self.a * np.asarray(x, dtype=float) ** (-self.alpha) + self.c


def fit_power_law(x, y, offset: bool = False, grid: int = 400) -> PowerLaw:
    """Fit ``y ≈ a x^(-α)`` (``offset=False``) or ``y ≈ a x^(-α) + c`` (``offset=True``).

    Without offset: least squares on ``log y = log a - α log x`` (a straight line in
    log-log axes). With offset: for each ``c`` on a grid in ``[0, min y)`` the
    straight-line fit of ``log(y - c)``; the ``c`` with the smallest squared error
    in ``log y`` is kept, then refined by a golden-section search. ``x``, ``y``:
    1-D, positive, at least 2 points (3 with offset).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}")
    if x.size < (3 if offset else 2):
        raise ValueError(f"need at least {3 if offset else 2} points, got {x.size}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("x and y must be positive for a power-law fit")
    lx = np.log(x)

    def line(c: float) -> tuple[float, float, float]:
        ly = np.log(y - c)
        slope, intercept = np.polyfit(lx, ly, 1)
        pred = np.exp(intercept) * x ** slope + c
        return float(np.exp(intercept)), float(-slope), float(np.sum((np.log(pred) - np.log(y)) ** 2))

    if not offset:
        a, alpha, _ = line(0.0)
        return PowerLaw(a, alpha, 0.0)
    top = y.min() * (1 - 1e-9)
    cs = np.linspace(0.0, top, grid, endpoint=False)
    errors = [line(c)[2] for c in cs]
    i = int(np.argmin(errors))
    lo, hi = cs[max(i - 1, 0)], cs[i + 1] if i + 1 < len(cs) else top
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):  # golden-section refinement of c in [lo, hi]
        c1, c2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if line(c1)[2] < line(c2)[2]:
            hi = c2
        else:
            lo = c1
    c = (lo + hi) / 2
    a, alpha, _ = line(c)
    return PowerLaw(a, alpha, float(c))


# ---------------------------------------------------------------------------
# Loss landscapes


def filter_normalized_direction(params: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                                unit_dim: int | Mapping[str, int] = 0,
                                ignore_biases: bool = True) -> dict[str, torch.Tensor]:
    """A random direction ``d`` in parameter space, filter-normalised (Li et al., 2018).

    For each parameter ``θ`` with ``ndim >= 2``, draw ``d ~ N(0, I)`` of the same
    shape and rescale every *filter* (one unit's incoming weights: a slice along
    ``unit_dim``) so that ``||d_f|| = ||θ_f||``. Biases and normalisation
    scales (parameters with ``ndim <= 1`` or with "bias" in their name) get
    ``d = 0`` when ``ignore_biases`` (the paper's choice), else they are
    normalised as a whole.

    ``unit_dim`` is the dimension indexing the units: 0 for ``nn.Linear`` and
    convolutions (weight ``(out, in, ...)``), 1 for ``dlbook.mlp.MLP`` whose
    ``W_l`` is ``(d_{l-1}, d_l)``. It may be a mapping from parameter name to dim.
    Returns a dict with the same keys and shapes as ``params``.
    """
    out = {}
    for name, theta in params.items():
        if not isinstance(theta, torch.Tensor):
            raise TypeError(f"parameter {name!r} is not a tensor")
        theta = theta.detach()
        d = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
        if theta.ndim <= 1 or "bias" in name:
            if ignore_biases:
                d = torch.zeros_like(theta)
            else:
                d = d * theta.norm() / d.norm().clamp_min(1e-12)
        else:
            dim = unit_dim.get(name, 0) if isinstance(unit_dim, Mapping) else unit_dim
            if not -theta.ndim <= dim < theta.ndim:
                raise ValueError(f"unit_dim {dim} out of range for {name!r} of shape {tuple(theta.shape)}")
            dims = [i for i in range(theta.ndim) if i != dim % theta.ndim]
            d = d * theta.norm(dim=dims, keepdim=True) / d.norm(dim=dims, keepdim=True).clamp_min(1e-12)
        out[name] = d
    return out


def _check_same_keys(*dicts: Mapping[str, torch.Tensor]) -> None:
    keys = set(dicts[0])
    for other in dicts[1:]:
        if set(other) != keys:
            raise ValueError(f"parameter dicts differ: {sorted(keys ^ set(other))}")
        for k in keys:
            if dicts[0][k].shape != other[k].shape:
                raise ValueError(f"{k!r}: shapes {tuple(dicts[0][k].shape)} and {tuple(other[k].shape)} differ")


@torch.no_grad()
def linear_path_losses(model: nn.Module, theta0: Mapping[str, torch.Tensor], theta1: Mapping[str, torch.Tensor],
                       alphas: Sequence[float], loss_of: Callable[[nn.Module, dict], float]) -> np.ndarray:
    """``L((1-α) θ₀ + α θ₁)`` for each ``α`` (the 1-D interpolation of Goodfellow et al.).

    ``loss_of(model, params)`` evaluates the loss with the parameters ``params``
    (e.g. through ``torch.func.functional_call``). Returns ``(len(alphas),)``.
    """
    _check_same_keys(theta0, theta1)
    out = []
    for a in alphas:
        params = {k: (1 - a) * theta0[k] + a * theta1[k] for k in theta0}
        out.append(float(loss_of(model, params)))
    return np.array(out)


@torch.no_grad()
def plane_losses(model: nn.Module, center: Mapping[str, torch.Tensor], d1: Mapping[str, torch.Tensor],
                 d2: Mapping[str, torch.Tensor], alphas: Sequence[float], betas: Sequence[float],
                 loss_of: Callable[[nn.Module, dict], float]) -> np.ndarray:
    """``L(θ* + α d₁ + β d₂)`` on a grid: returns ``(len(betas), len(alphas))`` (rows: β)."""
    _check_same_keys(center, d1, d2)
    grid = np.empty((len(betas), len(alphas)))
    for i, b in enumerate(betas):
        for j, a in enumerate(alphas):
            params = {k: center[k] + a * d1[k] + b * d2[k] for k in center}
            grid[i, j] = float(loss_of(model, params))
    return grid


def functional_loss(x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> Callable[[nn.Module, dict], float]:
    """``loss_of(model, params) = loss_fn(model_params(x), y)`` via ``torch.func.functional_call``."""
    from torch.func import functional_call

    def loss_of(model: nn.Module, params: dict) -> float:
        return float(loss_fn(functional_call(model, params, (x,)), y))

    return loss_of


# ---------------------------------------------------------------------------
# Training with early stopping (the scaling-law measurements)


@dataclass(frozen=True)
class EarlyStopped:
    """What :func:`train_early_stopping` did: the step of the best validation loss, that
    loss, the steps taken, and the validation curve ``(step, loss)`` it measured."""

    best_step: int
    best_val_loss: float
    steps: int
    val_curve: tuple[tuple[int, float], ...]


def train_early_stopping(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         x_val: torch.Tensor, y_val: torch.Tensor, loss_fn: Callable, *,
                         max_steps: int, batch_size: int = 128, lr: float = 1e-3,
                         eval_every: int = 50, patience: int = 5,
                         generator: torch.Generator | None = None) -> EarlyStopped:
    """Train ``model`` with Adam on ``(x, y)`` and keep the parameters of lowest validation loss.

    Mini-batches of ``min(batch_size, n)`` rows are drawn without replacement from a
    fresh permutation each epoch (``generator``; the incomplete last batch of an epoch
    is dropped). Every ``eval_every`` steps the loss on ``(x_val, y_val)`` is measured
    (one full batch, model in eval mode); training stops after ``max_steps`` steps or
    when ``patience`` evaluations in a row have not improved on the best one. The
    model is left at its best parameters (step 0, the initialisation, counts too).
    All tensors must be on the model's device.
    """
    if max_steps < 1 or eval_every < 1 or patience < 1 or batch_size < 1:
        raise ValueError("max_steps, eval_every, patience and batch_size must be >= 1")
    if x.shape[0] != y.shape[0] or x_val.shape[0] != y_val.shape[0]:
        raise ValueError("x and y (x_val and y_val) must have the same number of rows")
    n, b = x.shape[0], min(batch_size, x.shape[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    @torch.no_grad()
    def val_loss() -> float:
        was_training = model.training
        model.eval()
        value = float(loss_fn(model(x_val), y_val))
        model.train(was_training)
        return value

    best, best_step, best_state = val_loss(), 0, snapshot(model)
    curve, waited, step, pos = [(0, best)], 0, 0, n
    order = torch.arange(n)
    model.train()
    while step < max_steps and waited < patience:
        if pos + b > n:
            order, pos = torch.randperm(n, generator=generator).to(x.device), 0
        idx, pos = order[pos:pos + b], pos + b
        loss = loss_fn(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % eval_every == 0 or step == max_steps:
            value = val_loss()
            curve.append((step, value))
            if value < best:
                best, best_step, best_state, waited = value, step, snapshot(model), 0
            else:
                waited += 1
    rewind(model, best_state)
    return EarlyStopped(best_step, best, step, tuple(curve))
