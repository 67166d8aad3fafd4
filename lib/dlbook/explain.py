"""Gradient attributions from scratch: saliency, integrated gradients, sanity checks (ch20).

A classifier maps an input ``x`` (here an image ``(1, H, W)``) to scores ``f(x) ∈ R^C``;
an attribution for class ``c`` gives every input entry a number.

Saliency (Simonyan, Vedaldi & Zisserman 2014) is the gradient of the class score:

    S_c(x) = |∂ f_c(x) / ∂ x|          (absolute value optional)              (E.1)

Integrated gradients (Sundararajan, Taly & Yan 2017) integrate the gradient along the
straight path from a baseline ``x'`` to ``x``:

    IG_i(x) = (x_i - x'_i) ∫_0^1 ∂ f_c(x' + α (x - x')) / ∂ x_i dα              (E.2)

and satisfy *completeness*, by the fundamental theorem of calculus along the path:

    Σ_i IG_i(x) = f_c(x) - f_c(x')                                              (E.3)

The integral is replaced by a rule with nodes α_k and weights w_k, k = 1..K:

    IG_i(x) ≈ (x_i - x'_i) Σ_k w_k ∂ f_c(x' + α_k (x - x')) / ∂ x_i              (E.4)

- ``riemann_middle``: α_k = (k - 1/2)/K, w_k = 1/K (``riemann_left``/``_right``: the
  left and right ends of the K cells);
- ``gausslegendre``: the K-point Gauss-Legendre nodes and weights mapped from [-1, 1]
  to [0, 1] (α = (1 + t)/2, w = ω/2), exact for polynomials of degree 2K - 1.

These are the rules of captum's ``IntegratedGradients`` (same nodes and weights), so the
two agree to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "gausslegendre")


def _check_target(scores: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
    """Targets as a ``(n,)`` int64 tensor, each in ``[0, C)``."""
    n, c = scores.shape
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((n,), target, dtype=torch.long)
    if not isinstance(target, torch.Tensor) or target.dtype not in (torch.int64,
                                                                      torch.int32):
        raise TypeError(f"target must be an int or an integer tensor, got {target!r}")
    target = target.reshape(-1).long().to(scores.device)
    if target.shape[0] != n:
        raise ValueError(f"{target.shape[0]} targets for {n} inputs")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(f"target indices must lie in [0, {c}), got "
                         f"[{int(target.min())}, {int(target.max())}]")
    return target


def _class_scores(model: Callable, x: torch.Tensor,
                  target: torch.Tensor | int) -> torch.Tensor:
    """f_c(x) for every row: ``(n,)``."""
    scores = model(x)
    if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(f"the model must return (n, C) scores, got {tuple(scores.shape)}")
    t = _check_target(scores, target)
    return scores.gather(1, t[:, None])[:, 0]


def input_gradient(model: Callable, x: torch.Tensor,
                   target: torch.Tensor | int) -> torch.Tensor:
    """∂ f_c(x) / ∂ x for a batch ``x`` ``(n, ...)``; returns the same shape as ``x``.

    The rows are independent, so the gradient of the *sum* of the n class scores gives
    every row's own gradient in one backward pass.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_class_scores(model, x, target).sum(), x)
    return grad


def saliency(model: Callable, x: torch.Tensor, target: torch.Tensor | int,
             abs: bool = True) -> torch.Tensor:
    """The saliency map (E.1), ``|∂ f_c / ∂ x|`` (or the signed gradient), shape of ``x``."""
    grad = input_gradient(model, x, target)
    return grad.abs() if abs else grad


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Nodes α_k in [0, 1] and weights w_k of the rule in (E.4), float64 arrays ``(K,)``."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    k = n_steps
    if method == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(k)
        return 0.5 * (1.0 + t), 0.5 * w
    start = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (np.arange(k) + start) / k, np.full(k, 1.0 / k)


def integrated_gradients(model: Callable, x: torch.Tensor, target: torch.Tensor | int,
                         baseline: torch.Tensor | float = 0.0, n_steps: int = 50,
                         method: str = "gausslegendre",
                         batch_steps: int | None = None) -> torch.Tensor:
    """Integrated gradients (E.2) by the rule (E.4); returns the shape of ``x``.

    ``baseline``: a number (every entry; 0 = a black image) or a tensor of the shape of
    ``x`` or of one row. ``batch_steps``: how many path points to push through the model
    at once (default: all K of them, an ``(K n, ...)`` batch).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        baseline = torch.full_like(x, float(baseline))
    elif isinstance(baseline, torch.Tensor):
        if baseline.shape == x.shape[1:]:
            baseline = baseline.expand_as(x)
        elif baseline.shape != x.shape:
            raise ValueError(f"baseline shape {tuple(baseline.shape)} matches neither x "
                             f"{tuple(x.shape)} nor one row {tuple(x.shape[1:])}")
        baseline = baseline.to(x)
    else:
        raise TypeError(f"baseline must be a number or a tensor, got {type(baseline)}")
    alphas, weights = quadrature(n_steps, method)
    if batch_steps is None:
        batch_steps = n_steps
    if isinstance(batch_steps, bool) or not isinstance(batch_steps, int) or batch_steps < 1:
        raise ValueError(f"batch_steps must be a positive int, got {batch_steps!r}")
    delta = (x - baseline).detach()
    with torch.no_grad():
        scores = model(x)
    if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(f"the model must return (n, C) scores, got {tuple(scores.shape)}")
    target = _check_target(scores, target)
    total = torch.zeros_like(x)
    for s in range(0, n_steps, batch_steps):
        a = torch.as_tensor(alphas[s:s + batch_steps], dtype=x.dtype, device=x.device)
        w = torch.as_tensor(weights[s:s + batch_steps], dtype=x.dtype, device=x.device)
        shape = (len(a), 1) + (1,) * (x.ndim - 1)
        path = (baseline[None] + a.view(shape) * delta[None]).reshape(-1, *x.shape[1:])
        grads = input_gradient(model, path, target.repeat(len(a)))
        total += (w.view(shape) * grads.reshape(len(a), *x.shape)).sum(0)
    return delta * total


def completeness_gap(model: Callable, x: torch.Tensor, attributions: torch.Tensor,
                     target: torch.Tensor | int,
                     baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Σ_i IG_i - (f_c(x) - f_c(x')) per row, ``(n,)``: zero for exact IG (E.3)."""
    if attributions.shape != x.shape:
        raise ValueError(f"attributions {tuple(attributions.shape)} do not match x "
                         f"{tuple(x.shape)}")
    base = torch.full_like(x, float(baseline)) if not isinstance(
        baseline, torch.Tensor) else baseline.expand_as(x).to(x)
    with torch.no_grad():
        diff = _class_scores(model, x, target) - _class_scores(model, base, target)
    return attributions.flatten(1).sum(1) - diff


# ---------------------------------------------------------------------------
# The model-randomisation sanity check (Adebayo et al. 2018)


def cascading_randomization(model: nn.Module, layers: Sequence[nn.Module],
                            seed: int) -> list[nn.Module]:
    """Copies of ``model`` with its weight layers re-initialised from the top down.

    ``layers`` lists the model's weight layers from input to output. Copy ``j`` (j = 1..L)
    has the top ``j`` of them re-drawn with their own ``reset_parameters()`` (the
    initialisation the model was trained from), seeded by ``seed``; the rest keep their
    trained weights. Returns the L copies, the last one fully random.
    """
    import copy

    names = {id(m): name for name, m in model.named_modules()}
    missing = [layer for layer in layers if id(layer) not in names]
    if missing or not layers:
        raise ValueError("layers must be a non-empty list of sub-modules of model")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    out, current = [], copy.deepcopy(model)
    try:
        for layer in reversed(layers):
            current = copy.deepcopy(current)
            sub = current.get_submodule(names[id(layer)])
            if not hasattr(sub, "reset_parameters"):
                raise TypeError(f"{names[id(layer)]} has no reset_parameters()")
            sub.reset_parameters()
            out.append(current)
    finally:
        torch.random.set_rng_state(gen_state)
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair of ``a``, ``b`` ``(n, ...)``: ``(n,)``.

    The Pearson correlation of the ranks, ties given their average rank (as
    ``scipy.stats.spearmanr``).
    """
    from scipy.stats import rankdata

    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    ra = torch.from_numpy(rankdata(a.detach().flatten(1).cpu().double().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.detach().flatten(1).cpu().double().numpy(), axis=1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, data_range: float | None = None,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of image pairs ``(n, H, W)`` (or
    ``(n, 1, H, W)``), mean over ``window x window`` uniform windows: ``(n,)``.

    SSIM = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)),
    C1 = (k1 L)², C2 = (k2 L)², with L the data range (default: the range of each pair);
    local statistics with the sample (n - 1) normalisation, as scikit-image's default.
    """
    import torch.nn.functional as F

    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a.detach().double().reshape(a.shape[0], 1, *a.shape[-2:])
    b = b.detach().double().reshape(a.shape)
    if data_range is None:
        lo = torch.minimum(a.flatten(1).min(1).values, b.flatten(1).min(1).values)
        hi = torch.maximum(a.flatten(1).max(1).values, b.flatten(1).max(1).values)
        rng = (hi - lo).clamp_min(1e-12).view(-1, 1, 1, 1)
    else:
        rng = torch.full((a.shape[0], 1, 1, 1), float(data_range), dtype=a.dtype)
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    m = window * window
    mean = lambda t: F.avg_pool2d(t, window, stride=1)         # noqa: E731
    ma, mb = mean(a), mean(b)
    va = (mean(a * a) - ma * ma) * m / (m - 1)
    vb = (mean(b * b) - mb * mb) * m / (m - 1)
    cab = (mean(a * b) - ma * mb) * m / (m - 1)
    s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)
