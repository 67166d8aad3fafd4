"""Differential privacy (chapter 20): Laplace and snapping mechanisms, DP-SGD, RDP accounting.

A randomised mechanism ``M`` is (ε, δ)-differentially private (Dwork et al. 2006) if for
all neighbouring datasets ``D, D'`` (one record changed) and all sets of outputs ``S``

    P[M(D) ∈ S] <= e^ε P[M(D') ∈ S] + δ.

Pieces, each from scratch:

* :func:`laplace_mechanism`: ``f(D) + Laplace(Δf / ε)``, ε-DP for a query of
  L1-sensitivity ``Δf``.
* :func:`naive_laplace` and :func:`snapping_mechanism`: the textbook floating-point
  sampler ``x + s·b·(-ln U)``, whose set of reachable outputs depends on ``x``
  (Mironov 2012), and Mironov's fix ``clamp_B(round_Λ(clamp_B(x) + s·b·(-ln U)))``
  with ``Λ`` the smallest power of two ``>= b``.
* DP-SGD (Abadi et al. 2016): :func:`per_sample_grads` (``torch.func``),
  :func:`clip_factors` ``min(1, C / (‖g_i‖ + 1e-6))``, :func:`clip_and_sum`,
  :func:`noisy_average` ``(Σ_i clip(g_i) + N(0, σ²C² I)) / B``;
  :func:`linear_clipped_sum`, the same clipped sum for an MLP of ``nn.Linear`` layers
  from hooks, without materialising per-sample gradients (for a linear layer
  ``‖g_i‖² = ‖δ_i‖² (‖a_i‖² + 1)``); :func:`train_dp_sgd` with Poisson sampling.
* Accounting: :func:`rdp_sampled_gaussian`, the Rényi DP of the sampled Gaussian
  mechanism (Mironov, Talwar & Zhang 2019, Sec. 3.3; integer and fractional orders),
  composed over steps by addition, and :func:`epsilon_from_rdp` with the conversion of
  Balle et al. 2020, Thm. 21 (what Opacus 1.6 uses) or the classic one of Mironov 2017,
  ``ε = rdp - log δ / (α - 1)``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import special
from torch import nn
from tqdm.auto import tqdm

#: Opacus 1.6's ``RDPAccountant.DEFAULT_ALPHAS``: 1.1, 1.2, ..., 10.9 and 12, ..., 63.
DEFAULT_ORDERS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)):
        raise TypeError(f"delta must be a real number, got {type(delta).__name__}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return float(delta)


def _check_rate(q: float) -> float:
    if not 0 <= q <= 1:
        raise ValueError(f"the sampling rate q must be in [0, 1], got {q}")
    return float(q)


# ---------------------------------------------------------------------------
# The Laplace mechanism and its floating-point pitfall
# ---------------------------------------------------------------------------

def laplace_mechanism(value: float, sensitivity: float, epsilon: float, size: int = 1,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``size`` independent releases ``value + Laplace(b)``, ``b = sensitivity / epsilon``.

    Density of the noise: ``p(z) = exp(-|z| / b) / (2b)``; ε-DP for a query whose value
    changes by at most ``sensitivity`` between neighbouring datasets. Returns a float64
    tensor ``(size,)``. (Sampled in float64 by inverse CDF: statistically exact, but see
    :func:`naive_laplace` for why such a sampler leaks through its low-order bits.)
    """
    b = _check_positive("sensitivity", sensitivity) / _check_positive("epsilon", epsilon)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    u = torch.rand(size, generator=generator, dtype=torch.float64) - 0.5   # (-1/2, 1/2)
    return value - b * torch.sign(u) * torch.log1p(-2 * u.abs())


def naive_laplace(x: float, b: float, u: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The textbook float sampler ``x ⊕ s ⊗ b ⊗ (-ln U)``, in the dtype of ``u``.

    ``u`` in (0, 1] (any shape), ``sign`` ±1 of the same shape. Every operation rounds
    to the floating-point format; the outputs form a set that depends on ``x``, which is
    Mironov's (2012) attack on it.
    """
    _check_positive("b", b)
    if (u <= 0).any() or (u > 1).any():
        raise ValueError("u must lie in (0, 1]")
    bb = torch.tensor(b, dtype=u.dtype)
    return torch.tensor(x, dtype=u.dtype) + sign.to(u.dtype) * (bb * -torch.log(u))


def snapping_grid(b: float) -> float:
    """Mironov's ``Λ``: the smallest power of two that is ``>= b``."""
    return 2.0 ** math.ceil(math.log2(_check_positive("b", b)))


def snapping_mechanism(x: float, b: float, bound: float, u: torch.Tensor,
                       sign: torch.Tensor) -> torch.Tensor:
    """Mironov's (2012) snapping mechanism, in the dtype of ``u``.

    ``clamp_B(Λ · round((clamp_B(x) ⊕ s ⊗ b ⊗ (-ln U)) / Λ))`` with ``Λ`` from
    :func:`snapping_grid` and ``B = bound``: the output lies on the grid ``Λ Z`` (or at
    ``±B``), and rounding away the low-order bits removes the dependence of the set of
    outputs on ``x``. Mironov proves ``(1/λ + 2^-49 B/λ)``-DP for sensitivity 1,
    ``λ = b``, in double precision with an exactly rounded log, when ``λ < B < 2^46 λ``.
    """
    _check_positive("bound", bound)
    lam = snapping_grid(b)
    clamped = float(min(max(x, -bound), bound))
    y = naive_laplace(clamped, b, u, sign)
    return torch.clamp(torch.round(y / lam) * lam, -bound, bound)


# ---------------------------------------------------------------------------
# DP-SGD
# ---------------------------------------------------------------------------

def per_sample_grads(model: nn.Module, loss_fn: Callable, x: torch.Tensor,
                     y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of ``loss_fn(model(x_i), y_i)`` for each sample: ``{name: (B, *p.shape)}``.

    ``torch.func.vmap(grad(...))`` over the batch dimension of ``x`` ``(B, ...)`` and
    ``y`` ``(B, ...)``; ``loss_fn`` takes a batch of one and returns a scalar.
    """
    from torch.func import functional_call, grad, vmap

    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def loss_one(p, xi, yi):
        return loss_fn(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def per_sample_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """``‖g_i‖``, the L2 norm over all parameters of each sample's gradient: ``(B,)``."""
    flat = [g.reshape(g.shape[0], -1) for g in grads.values()]
    return torch.sqrt(sum(f.pow(2).sum(1) for f in flat))


def clip_factors(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """Opacus's per-sample clipping factors ``min(1, C / (‖g_i‖ + 1e-6))``: ``(B,)``."""
    _check_positive("clip", clip)
    return (clip / (norms + 1e-6)).clamp(max=1.0)


def clip_and_sum(grads: dict[str, torch.Tensor], clip: float) -> dict[str, torch.Tensor]:
    """``Σ_i min(1, C / (‖g_i‖ + 1e-6)) g_i`` for each parameter: ``{name: p.shape}``."""
    f = clip_factors(per_sample_norms(grads), clip)
    return {k: torch.einsum("b,b...->...", f, g) for k, g in grads.items()}


def noisy_average(clipped_sum: dict[str, torch.Tensor], clip: float, sigma: float,
                  batch_size: float,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """DP-SGD's gradient ``(Σ_i clip(g_i) + N(0, σ² C² I)) / B``.

    ``batch_size`` is the (expected, under Poisson sampling) batch size ``B``; each
    coordinate of the noise added to the average has standard deviation ``σ C / B``.
    """
    _check_positive("clip", clip)
    _check_positive("batch_size", batch_size)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    out = {}
    for k, s in clipped_sum.items():
        noise = torch.randn(s.shape, generator=generator, dtype=s.dtype)
        out[k] = (s + sigma * clip * noise.to(s.device)) / batch_size
    return out


def linear_clipped_sum(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor,
                       clip: float) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
    """Clipped per-sample gradient sum of an MLP (``nn.Linear`` + parameter-free layers).

    The forward pass keeps each linear layer's input ``a`` ``(B, in)``; one backward
    pass gives the gradient ``δ`` ``(B, out)`` of the summed cross-entropy with respect
    to the layer's output. Sample ``i``'s gradient is ``δ_i a_iᵀ`` (weight) and ``δ_i``
    (bias), so ``‖g_i‖² = Σ_layers ‖δ_i‖² (‖a_i‖² + 1)`` and the clipped sum is
    ``Σ_i f_i g_i = (f ⊙ δ)ᵀ a``: one matrix product per layer, no ``(B, out, in)``
    tensor, and no unclipped weight gradient. Returns ``({name: clipped sum}, norms
    (B,), summed loss)``.
    """
    _check_positive("clip", clip)
    layers = list(model.named_children())
    for n, m in layers:
        if not isinstance(m, nn.Linear) and any(True for _ in m.parameters()):
            raise TypeError(f"layer {n} ({type(m).__name__}) has parameters but is not "
                            "nn.Linear")
    names, acts, outs = [], [], []
    h = x.reshape(len(x), -1)
    for n, m in layers:
        if isinstance(m, nn.Linear):
            names.append(n)
            acts.append(h.detach())
            h = m(h)
            outs.append(h)
        else:
            h = m(h)
    if not names:
        raise TypeError("linear_clipped_sum needs an nn.Sequential with nn.Linear layers")
    loss = nn.functional.cross_entropy(h, y, reduction="sum")
    deltas = torch.autograd.grad(loss, outs)
    sq = sum(d.pow(2).sum(1) * (a.pow(2).sum(1) + 1) for d, a in zip(deltas, acts))
    norms = torch.sqrt(sq)
    f = clip_factors(norms, clip)
    clipped = {}
    for n, d, a in zip(names, deltas, acts):
        fd = d * f[:, None]
        clipped[f"{n}.weight"] = fd.T @ a
        clipped[f"{n}.bias"] = fd.sum(0)
    return clipped, norms, loss.detach().item()


def train_dp_sgd(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, *,
                 sample_rate: float, steps: int, lr: float, clip: float | None,
                 sigma: float, generator: torch.Generator, momentum: float = 0.0,
                 desc: str | None = None, progress: bool = True) -> list[float]:
    """DP-SGD with Poisson sampling (each example joins each batch with prob. ``q``).

    Each step: the clipped per-sample gradient sum (:func:`linear_clipped_sum`), plus
    ``N(0, σ²C²)``, divided by the expected batch size ``q n``; then an SGD step.
    ``clip=None`` (and ``sigma=0``) trains without privacy: plain SGD on the mean loss
    of the same Poisson batches. Returns the mean training loss of each step.
    """
    q = _check_rate(sample_rate)
    _check_positive("lr", lr)
    if clip is None and sigma != 0:
        raise ValueError("sigma > 0 needs a clipping norm")
    if clip is not None:
        _check_positive("clip", clip)
    n = len(x)
    expected = q * n
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        mask = torch.rand(n, generator=generator) < q
        xb, yb = x[mask], y[mask]
        opt.zero_grad()
        if clip is None:
            loss = nn.functional.cross_entropy(model(xb.reshape(len(xb), -1)), yb)
            loss.backward()
            losses.append(loss.detach().item())
        else:
            if len(xb):
                clipped, _, total = linear_clipped_sum(model, xb, yb, clip)
            else:
                clipped = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
                total = 0.0
            noisy = noisy_average(clipped, clip, sigma, expected, generator)
            for k, p in model.named_parameters():
                p.grad = noisy[k]
            losses.append(total / max(len(xb), 1))
        opt.step()
    return losses


# ---------------------------------------------------------------------------
# Rényi DP of the sampled Gaussian mechanism, and the conversion to (ε, δ)
# ---------------------------------------------------------------------------

def _log_add(a: float, b: float) -> float:
    lo, hi = min(a, b), max(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    if a < b:
        raise ValueError("log-space subtraction with a negative result")
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    try:
        return math.log(math.expm1(a - b)) + b
    except OverflowError:
        return a


def _log_erfc(x: float) -> float:
    return math.log(2) + float(special.log_ndtr(-x * math.sqrt(2)))


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    # A_α = Σ_i C(α, i) q^i (1-q)^(α-i) exp((i² - i) / (2σ²))
    log_a = -math.inf
    for i in range(alpha + 1):
        term = (math.log(special.binom(alpha, i)) + i * math.log(q)
                + (alpha - i) * math.log(1 - q) + (i * i - i) / (2 * sigma**2))
        log_a = _log_add(log_a, term)
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    # MTZ 2019, Sec. 3.3: A_α = A_0 + A_1, two series split at z0, summed to 1e-13
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    i = 0
    while True:
        coef = special.binom(alpha, i)
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log(1 - q)
        log_t1 = log_coef + j * math.log(q) + i * math.log(1 - q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            return _log_add(log_a0, log_a1)


def rdp_sampled_gaussian(q: float, sigma: float, orders: Sequence[float],
                         steps: int = 1) -> np.ndarray:
    """RDP ``ε_α`` of ``steps`` compositions of the sampled Gaussian mechanism.

    One step: ``ε_α = log A_α / (α - 1)`` with ``A_α = E_{z ~ μ0}[(μ(z) / μ0(z))^α]``,
    ``μ0 = N(0, σ²)``, ``μ = (1 - q) μ0 + q N(1, σ²)`` (Mironov, Talwar & Zhang 2019);
    for integer ``α`` the binomial sum ``Σ_i C(α,i) q^i (1-q)^(α-i) e^((i²-i)/(2σ²))``,
    for fractional ``α`` their convergent two-series form. Composition adds: the result
    is ``steps · ε_α``, shape ``(len(orders),)``.
    """
    q = _check_rate(q)
    _check_positive("sigma", sigma)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = []
    for alpha in orders:
        if alpha <= 1:
            raise ValueError(f"RDP orders must be > 1, got {alpha}")
        if q == 0:
            out.append(0.0)
        elif q == 1:
            out.append(alpha / (2 * sigma**2))
        elif float(alpha).is_integer():
            out.append(_log_a_int(q, sigma, int(alpha)) / (alpha - 1))
        else:
            out.append(_log_a_frac(q, sigma, float(alpha)) / (alpha - 1))
    return np.asarray(out) * steps


def epsilon_from_rdp(orders: Sequence[float], rdp: Sequence[float], delta: float,
                     conversion: str = "balle") -> tuple[float, float]:
    """``(ε, best α)``: the smallest ε over the orders for the given δ.

    ``conversion="balle"`` (Balle et al. 2020, Thm. 21; Opacus 1.6):
    ``ε = rdp - (log δ + log α) / (α - 1) + log((α - 1) / α)``;
    ``"classic"`` (Mironov 2017, Prop. 3; TF-Privacy before 2020):
    ``ε = rdp - log δ / (α - 1)``.
    """
    delta = _check_delta(delta)
    a, r = np.asarray(orders, dtype=float), np.asarray(rdp, dtype=float)
    if a.shape != r.shape:
        raise ValueError(f"orders and rdp differ in shape: {a.shape} vs {r.shape}")
    if conversion == "balle":
        eps = r - (np.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    elif conversion == "classic":
        eps = r - np.log(delta) / (a - 1)
    else:
        raise ValueError(f"conversion must be 'balle' or 'classic', got {conversion!r}")
    k = int(np.nanargmin(eps))
    return float(eps[k]), float(a[k])


def dp_sgd_epsilon(q: float, sigma: float, steps: int, delta: float,
                   orders: Sequence[float] = DEFAULT_ORDERS,
                   conversion: str = "balle") -> float:
    """ε of ``steps`` DP-SGD steps at sampling rate ``q`` and noise multiplier ``σ``."""
    rdp = rdp_sampled_gaussian(q, sigma, orders, steps)
    return epsilon_from_rdp(orders, rdp, delta, conversion)[0]
