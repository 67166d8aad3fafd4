"""Nadaraya-Watson kernel regression as attention (Baggag & Saad §4.1, eq. (4.1)).

Given key-value pairs ``(k_i, v_i)``, i = 1..m, the estimate at a query ``q`` is the
weighted average

    f_hat(q) = sum_i a(q, k_i) v_i,
    a(q, k_i) = exp(-||q - k_i||^2 / (2 sigma^2)) / sum_l exp(-||q - k_l||^2 / (2 sigma^2))   (4.1)

i.e. ``softmax(S) V`` with the score matrix ``S_ij = -||q_i - k_j||^2 / (2 sigma^2)``:
attention whose scores are negative squared distances. Expanding the square,
``S_ij = q_i.k_j / sigma^2 - ||k_j||^2 / (2 sigma^2) - ||q_i||^2 / (2 sigma^2)``; the last
term is the same for a whole row and cancels in the softmax, so the Gaussian kernel is
dot-product attention with scale ``1/sigma^2`` plus a key bias ``-||k_j||^2/(2 sigma^2)``.

Shapes: queries ``(n,)`` or ``(..., n, d)``, keys ``(m,)`` or ``(..., m, d)``, values
``(m,)`` or ``(..., m, d_v)``. One-dimensional inputs are points on the real line (d = 1)
and scalar values; the predictions then have shape ``(n,)``.

Also here, for comparison: polynomial least squares (the "numerical analysis" answer),
the nearest-key answer, and :class:`GaussianKernelRegression`, whose bandwidth is a
trainable parameter fitted by leave-one-out.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from .attention import attention

__all__ = ["as_points", "squared_distances", "gaussian_scores", "gaussian_weights",
           "nadaraya_watson", "nearest_neighbour", "fit_polynomial", "eval_polynomial",
           "leave_one_out_mask", "bandwidth_sweep", "GaussianKernelRegression",
           "train_bandwidth"]


def as_points(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A 1-D tensor ``(n,)`` becomes ``(n, 1)`` (n points in R^1); ``(..., n, d)`` is kept."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (points), got a scalar")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.unsqueeze(-1) if x.dim() == 1 else x


def _check_sigma(sigma: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a single number, got a tensor of shape {tuple(sigma.shape)}")
        value = float(sigma.detach())
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        value = float(sigma)
    else:
        raise TypeError(f"sigma must be a positive number or a one-element tensor, got {type(sigma).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"the bandwidth sigma must be positive and finite, got {value}")
    return sigma.reshape(()) if isinstance(sigma, torch.Tensor) else value


def squared_distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``D_ij = ||q_i - k_j||^2``: queries ``(n,)``/``(..., n, d)``, keys ``(m,)``/``(..., m, d)`` -> ``(..., n, m)``.

    Computed from the differences (not from ``|q|^2 + |k|^2 - 2 q.k``), so it is exact
    to rounding and never negative.
    """
    q, k = as_points(queries, "queries"), as_points(keys, "keys")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries have dimension {q.shape[-1]} but keys {k.shape[-1]}")
    return (q.unsqueeze(-2) - k.unsqueeze(-3)).pow(2).sum(-1)


def gaussian_scores(queries: torch.Tensor, keys: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Attention scores of the Gaussian kernel, ``S_ij = -||q_i - k_j||^2 / (2 sigma^2)``, shape ``(..., n, m)``."""
    sigma = _check_sigma(sigma)
    return -squared_distances(queries, keys) / (2 * sigma ** 2)


def _values(values: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    k = as_points(keys, "keys")
    scalar = values.dim() == 1
    v = values.unsqueeze(-1) if scalar else values
    if v.dim() == 0 or v.shape[-2] != k.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2] if v.dim() > 1 else 0} values: "
                         "each key needs one value")
    return v.to(k.dtype), scalar


def nadaraya_watson(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    sigma: float | torch.Tensor, mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nadaraya-Watson estimate with the Gaussian kernel (4.1): ``(softmax(S) V, softmax(S))``.

    ``S_ij = -||q_i - k_j||^2 / (2 sigma^2)``; the softmax runs over the keys. Computed by
    :func:`dlbook.attention.attention` with the scores passed as its additive ``bias`` (and
    ``scale=0`` to switch off the dot product). ``mask`` (boolean, True = may attend,
    broadcast to ``(..., n, m)``) removes keys, e.g. :func:`leave_one_out_mask`.

    Returns the predictions ``(n,)`` for 1-D values (else ``(..., n, d_v)``) and the
    attention weights ``(..., n, m)``, whose rows are positive and sum to one.
    """
    v, scalar = _values(values, keys)
    scores = gaussian_scores(queries, keys, sigma)
    out, weights = attention(as_points(queries, "queries"), as_points(keys, "keys"), v,
                             mask=mask, bias=scores, scale=0.0)
    return (out.squeeze(-1) if scalar else out), weights


def nearest_neighbour(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The value of the closest key: ``f_hat(q_i) = v_l`` with ``l = argmin_j ||q_i - k_j||``.

    Shapes as in :func:`nadaraya_watson`; ties go to the first key. This is the limit of
    Nadaraya-Watson as ``sigma -> 0`` (when the nearest key is unique).
    """
    v, scalar = _values(values, keys)
    idx = squared_distances(queries, keys).argmin(-1)                     # (..., n)
    out = torch.gather(v, -2, idx.unsqueeze(-1).expand(*idx.shape, v.shape[-1]))
    return out.squeeze(-1) if scalar else out


def fit_polynomial(x: torch.Tensor, y: torch.Tensor, degree: int) -> torch.Tensor:
    """Least-squares polynomial: ``c = argmin ||A c - y||^2`` with ``A_ij = x_i^j``, j = 0..degree.

    x, y: ``(n,)``. Returns the coefficients ``(degree + 1,)``, constant term first
    (``numpy.polyfit`` returns them highest degree first). The problem is solved in
    float64 on the CPU by ``torch.linalg.lstsq`` and cast back to the dtype of ``y``.
    """
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError("x and y must be torch tensors")
    if x.dim() != 1 or y.dim() != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < degree + 1:
        raise ValueError(f"a degree-{degree} polynomial needs at least {degree + 1} points, got {x.numel()}")
    xd = x.detach().to("cpu", torch.float64)
    a = torch.vander(xd, N=degree + 1, increasing=True)                      # (n, degree + 1)
    c = torch.linalg.lstsq(a, y.detach().to("cpu", torch.float64).unsqueeze(-1), driver="gelsd").solution
    return c.squeeze(-1).to(y.device, y.dtype)


def eval_polynomial(coefficients: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``p(x) = sum_j c_j x^j`` by Horner's rule; coefficients ``(degree + 1,)`` (constant first), x any shape."""
    if coefficients.dim() != 1 or coefficients.numel() == 0:
        raise ValueError(f"coefficients must be a non-empty 1-D tensor, got shape {tuple(coefficients.shape)}")
    out = torch.zeros_like(x) + coefficients[-1]
    for c in coefficients.flip(0)[1:]:
        out = out * x + c
    return out


def leave_one_out_mask(n: int, device=None) -> torch.Tensor:
    """``(n, n)`` boolean mask, False on the diagonal: point i is predicted from the others."""
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 points, got {n}")
    return ~torch.eye(n, dtype=torch.bool, device=device)


def bandwidth_sweep(sigmas, queries: torch.Tensor, targets: torch.Tensor, keys: torch.Tensor,
                    values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error ``mean_i (f_hat_sigma(q_i) - t_i)^2`` for each sigma, shape ``(len(sigmas),)``.

    queries ``(n,)`` with targets ``(n,)``; keys and values ``(m,)``. With ``queries = keys``
    and ``mask = leave_one_out_mask(m)`` this is the leave-one-out error.
    """
    t = targets.reshape(-1)
    out = []
    with torch.no_grad():
        for s in sigmas:
            pred, _ = nadaraya_watson(queries, keys, values, float(s), mask=mask)
            if pred.shape != t.shape:
                raise ValueError(f"{pred.numel()} predictions but {t.numel()} targets")
            out.append((pred - t).pow(2).mean())
    return torch.stack(out)


class GaussianKernelRegression(nn.Module):
    """Nadaraya-Watson (4.1) with a trainable bandwidth ``sigma = exp(log_sigma)``.

    The logarithm keeps sigma positive whatever the gradient step. ``forward(queries,
    keys, values, mask=None)`` returns the predictions as :func:`nadaraya_watson` and keeps
    the last weights ``(..., n, m)`` in ``self.weights`` (detached).
    """

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        sigma = _check_sigma(sigma)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(float(sigma))))
        self.weights: torch.Tensor | None = None

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        pred, w = nadaraya_watson(queries, keys, values, self.sigma.to(as_points(keys, "keys").dtype),
                                  mask=mask)
        self.weights = w.detach()
        return pred

    def loo_loss(self, x: torch.Tensor, y: torch.Tensor, leave_one_out: bool = True) -> torch.Tensor:
        """Mean squared error of predicting each ``y_i`` from the other pairs (diagonal masked).

        x ``(n,)`` or ``(n, d)``, y ``(n,)``. ``leave_one_out=False`` lets each point see
        itself: that loss falls to 0 as sigma -> 0 (every point copies its own value), so
        minimising it collapses the bandwidth.
        """
        if y.dim() != 1 or as_points(x).shape[0] != y.shape[0]:
            raise ValueError(f"x and y must hold the same number of points, got {tuple(x.shape)} and {tuple(y.shape)}")
        mask = leave_one_out_mask(y.shape[0], device=y.device) if leave_one_out else None
        return (self(x, x, y, mask=mask) - y).pow(2).mean()

    def extra_repr(self) -> str:
        return f"sigma={float(self.sigma.detach()):.4g}"


def train_bandwidth(model: GaussianKernelRegression, x: torch.Tensor, y: torch.Tensor, steps: int,
                    lr: float = 0.05, leave_one_out: bool = True, desc: str = "bandwidth"
                    ) -> dict[str, list[float]]:
    """Full-batch Adam on ``log_sigma`` minimising :meth:`GaussianKernelRegression.loo_loss`.

    Returns ``{"sigma": [...], "loss": [...]}``, the values before each step and after
    the last (``steps + 1`` entries each). A tqdm bar shows progress.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist: dict[str, list[float]] = {"sigma": [], "loss": []}
    for _ in tqdm(range(steps + 1), desc=desc, leave=False):
        loss = model.loo_loss(x, y, leave_one_out=leave_one_out)
        hist["sigma"].append(float(model.sigma.detach()))
        hist["loss"].append(float(loss.detach()))
        if len(hist["loss"]) > steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return hist
