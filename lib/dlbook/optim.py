"""Optimisation for deep learning (chapter 02; Baggag & Saad, §3.3).

Two kinds of tools live here.

* Functions for small, fully known problems: gradient descent (3.13)

      w_{j+1} = w_j - η_j ∇f(w_j)

  with an exact line search on a quadratic, a backtracking (Armijo) line
  search, Robbins–Monro step sizes (3.16) and the soft-thresholding operator
  of the L1 proximal gradient method (ISTA).
* ``torch.optim.Optimizer`` subclasses written from the update formulas —
  :class:`Momentum` (3.19), :class:`AdaGrad`, :class:`Adam` (3.20-3.22) and
  :class:`ProximalL1` — so that they plug into :func:`dlbook.training.fit`
  and can be compared step by step with ``torch.optim``.

Every optimizer updates each parameter tensor ``w`` (any shape) in place with
state tensors of the same shape; all operations are element-wise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

# ---------------------------------------------------------------------------
# Gradient descent on functions we know completely


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {value}")


def quadratic(A: torch.Tensor, b: torch.Tensor) -> tuple[Callable, Callable]:
    """``f(w) = ½ wᵀAw - bᵀw`` and ``∇f(w) = Aw - b`` for a symmetric ``A`` ``(d, d)``, ``b`` ``(d,)``.

    With ``A`` symmetric positive definite, ``f`` is strictly convex and its
    minimiser is ``w* = A⁻¹ b``.
    """
    if A.ndim != 2 or A.shape[0] != A.shape[1] or b.shape != (A.shape[0],):
        raise ValueError(f"need A (d, d) and b (d,), got {tuple(A.shape)} and {tuple(b.shape)}")
    if not torch.allclose(A, A.T):
        raise ValueError("A must be symmetric")

    def f(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * w @ (A @ w) - b @ w

    def grad(w: torch.Tensor) -> torch.Tensor:
        return A @ w - b

    return f, grad


def exact_step(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The exact line search on a quadratic: ``η = gᵀg / gᵀAg`` minimises ``f(w - η g)``.

    (Setting the derivative of ``η ↦ f(w - ηg)``, ``-gᵀ(A(w - ηg) - b) = -gᵀg + η gᵀAg``, to zero.)
    ``A``: ``(d, d)`` symmetric positive definite; ``g = ∇f(w)``: ``(d,)``.
    """
    if g.ndim != 1 or A.shape != (g.shape[0], g.shape[0]):
        raise ValueError(f"need A (d, d) and g (d,), got {tuple(A.shape)} and {tuple(g.shape)}")
    curvature = g @ (A @ g)
    if curvature <= 0:
        raise ValueError("gᵀAg must be positive (A positive definite and g != 0)")
    return (g @ g) / curvature


def armijo_step(f: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, g: torch.Tensor,
                eta0: float = 1.0, c: float = 1e-4, rho: float = 0.5, max_halvings: int = 60) -> float:
    """Backtracking line search: the first ``η = eta0 ρ^k`` with the Armijo sufficient decrease

        f(w - η g) <= f(w) - c η ||g||².

    ``w``, ``g = ∇f(w)``: same shape. Raises ``RuntimeError`` if no such ``η`` is
    found in ``max_halvings`` reductions (``g`` is then not a descent direction).
    """
    _check_positive("eta0", eta0)
    if not 0 < c < 1 or not 0 < rho < 1:
        raise ValueError(f"need 0 < c < 1 and 0 < rho < 1, got c={c}, rho={rho}")
    fw, gg = float(f(w)), float((g * g).sum())
    eta = eta0
    for _ in range(max_halvings):
        if float(f(w - eta * g)) <= fw - c * eta * gg:
            return eta
        eta *= rho
    raise RuntimeError("Armijo backtracking failed: is g the gradient at w?")


def gradient_descent(f: Callable, grad: Callable, w0: torch.Tensor, step: str | float | Callable,
                     *, A: torch.Tensor | None = None, tol: float = 1e-8, max_iter: int = 10_000,
                     ) -> torch.Tensor:
    """Gradient descent (3.13) until ``||∇f(w_j)|| <= tol`` or ``max_iter`` steps.

    ``step`` chooses η_j: ``"exact"`` (needs the quadratic's ``A``, see
    :func:`exact_step`), ``"armijo"`` (:func:`armijo_step` from ``eta0 = 1``), a
    constant float, or a callable ``j -> η_j`` (``j = 0, 1, ...``).
    Returns the iterates ``w_0, w_1, ...`` stacked, shape ``(J + 1, d)``.
    """
    if w0.ndim != 1:
        raise ValueError(f"w0 must be a vector (d,), got shape {tuple(w0.shape)}")
    if step == "exact" and A is None:
        raise ValueError("step='exact' needs the quadratic's matrix A")
    if isinstance(step, str) and step not in ("exact", "armijo"):
        raise ValueError(f"step must be 'exact', 'armijo', a float or a callable, got {step!r}")
    if isinstance(step, (int, float)) and not isinstance(step, bool):
        _check_positive("step", float(step))
    w = w0.clone()
    iterates = [w.clone()]
    for j in range(max_iter):
        g = grad(w)
        if float(g.norm()) <= tol:
            break
        if step == "exact":
            eta = exact_step(A, g)
        elif step == "armijo":
            eta = armijo_step(f, w, g)
        elif callable(step):
            eta = step(j)
        else:
            eta = float(step)
        w = w - eta * g
        iterates.append(w.clone())
    return torch.stack(iterates)


def robbins_monro(a: float, b: float) -> Callable[[int], float]:
    """Step sizes ``η_j = a / (b + j)``, ``j = 0, 1, ...``: they satisfy (3.16),
    ``Σ η_j = ∞`` (harmonic series) and ``Σ η_j² < ∞``."""
    _check_positive("a", a)
    _check_positive("b", b)
    return lambda j: a / (b + j)


def soft_threshold(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """The proximal operator of ``threshold · ||·||_1``: ``sign(x) max(|x| - threshold, 0)``.

    Entries with ``|x| <= threshold`` become exactly zero. Any shape.
    """
    _check_positive("threshold", threshold, allow_zero=True)
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0.0)


# ---------------------------------------------------------------------------
# Optimizers (torch.optim.Optimizer subclasses)


class _PerParameter(torch.optim.Optimizer):
    """Shared ``step``: evaluate the closure, then call :meth:`update` on every
    parameter that has a gradient. Subclasses write only the update formula."""

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, p.grad, group, self.state[p])
        return loss

    def update(self, p: torch.Tensor, g: torch.Tensor, group: dict, state: dict) -> None:
        raise NotImplementedError


class Momentum(_PerParameter):
    """Gradient descent with (heavy-ball) momentum, in PyTorch's form:

        v_j = μ v_{j-1} + g_j   (v_0 = g_0),    w_{j+1} = w_j - η v_j.

    Since ``w_j - w_{j-1} = -η v_{j-1}``, this is exactly (3.19),
    ``w_{j+1} = w_j - η ∇f(w_j) + ν (w_j - w_{j-1})`` with ``ν = μ``, as long as η
    is constant. ``torch.optim.SGD(lr=η, momentum=μ)`` (dampening 0, no Nesterov)
    computes the same iterates. ``momentum=0`` is plain (mini-batch) SGD (3.18).
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, momentum: float = 0.9):
        _check_positive("lr", lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum))

    def update(self, p, g, group, state):
        if group["momentum"] != 0:
            if "velocity" not in state:
                state["velocity"] = g.clone()
            else:
                state["velocity"].mul_(group["momentum"]).add_(g)
            g = state["velocity"]
        p.add_(g, alpha=-group["lr"])


class AdaGrad(_PerParameter):
    """AdaGrad {Duchi et al. 2011}: a per-coordinate step from the history of squared gradients,

        s_t = s_{t-1} + g_t²   (s_0 = 0),    w_t = w_{t-1} - η g_t / (sqrt(s_t) + ε).

    Coordinates that have seen large gradients take small steps and rarely
    updated ones keep large steps. Matches ``torch.optim.Adagrad`` with its defaults
    (``lr_decay = 0``, ``initial_accumulator_value = 0``).
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, eps: float = 1e-10):
        _check_positive("lr", lr)
        _check_positive("eps", eps)
        super().__init__(params, dict(lr=lr, eps=eps))

    def update(self, p, g, group, state):
        if "sum_sq" not in state:
            state["sum_sq"] = torch.zeros_like(p)
        s = state["sum_sq"]
        s.addcmul_(g, g)                                  # s = s + g²
        p.addcdiv_(g, s.sqrt().add_(group["eps"]), value=-group["lr"])


class Adam(_PerParameter):
    """Adam {Kingma & Ba 2014}, (3.20)-(3.22): with ``g_t`` the gradient at step ``t = 1, 2, ...``

        m_t = β1 m_{t-1} + (1 - β1) g_t,    m̂_t = m_t / (1 - β1^t)          (3.20)
        v_t = β2 v_{t-1} + (1 - β2) g_t²,   v̂_t = v_t / (1 - β2^t)          (3.21)
        w_t = w_{t-1} - η m̂_t / (sqrt(v̂_t) + ε)       (eps_inside_sqrt=False, PyTorch)
        w_t = w_{t-1} - η m̂_t / sqrt(v̂_t + ε)         (eps_inside_sqrt=True, (3.22) as printed)

    ``m_0 = v_0 = 0``. With the default placement the iterates equal those of
    ``torch.optim.Adam(lr, betas, eps)`` (same order of floating-point operations).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, eps_inside_sqrt: bool = False):
        _check_positive("lr", lr)
        _check_positive("eps", eps, allow_zero=True)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not isinstance(eps_inside_sqrt, bool):
            raise TypeError("eps_inside_sqrt must be a bool")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, eps_inside_sqrt=eps_inside_sqrt))

    def update(self, p, g, group, state):
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        if not state:
            state["t"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["t"] += 1
        t, m, v = state["t"], state["m"], state["v"]
        m.lerp_(g, 1 - b1)                            # m = β1 m + (1 - β1) g
        v.mul_(b2).addcmul_(g, g, value=1 - b2)       # v = β2 v + (1 - β2) g²
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        if group["eps_inside_sqrt"]:
            denom = (v / bc2).add_(eps).sqrt_()       # sqrt(v̂ + ε)
        else:
            denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)   # sqrt(v̂) + ε
        p.addcdiv_(m, denom, value=-lr / bc1)         # η m̂ / denom


class ProximalL1(_PerParameter):
    """Proximal gradient (ISTA) for ``loss(w) + λ ||w||_1``:

        w_{j+1} = S_{ηλ}(w_j - η ∇loss(w_j)),   S_τ(x) = sign(x) max(|x| - τ, 0).

    The gradient step uses only the smooth loss; the soft-thresholding
    :func:`soft_threshold` then sets every coordinate with ``|·| <= ηλ`` to exactly 0.
    Give ``l1=0`` to a parameter group (e.g. the biases) to leave it unpenalised.
    """

    def __init__(self, params: Iterable, lr: float = 1e-1, l1: float = 1e-3):
        _check_positive("lr", lr)
        _check_positive("l1", l1, allow_zero=True)
        super().__init__(params, dict(lr=lr, l1=l1))

    def update(self, p, g, group, state):
        p.add_(g, alpha=-group["lr"])
        if group["l1"] > 0:
            p.copy_(soft_threshold(p, group["lr"] * group["l1"]))
