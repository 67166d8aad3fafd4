"""Back-propagation for the MLP in matrix form, and weight initialisation (chapter 03).

With samples as the rows of ``X`` (``Z_0 = X``, shape ``(n, d_0)``), the forward pass of
:func:`dlbook.mlp.forward_propagation` computes

    A_l = Z_{l-1} W_l + b_l,    Z_l = σ(A_l),        l = 1, ..., L+1          (3.6)

For a loss f of the scores Z_{L+1}, write Δ_l = ∂f/∂A_l ``(n, d_l)`` (one row of
errors per sample). The chain rule (3.26)-(3.27) of Baggag & Saad becomes

    Δ_{L+1} = ∂f/∂Z_{L+1} ⊙ σ'_{last}(A_{L+1})
    Δ_l     = (Δ_{l+1} W_{l+1}ᵀ) ⊙ σ'(A_l)                                    (3.26)
    ∂f/∂W_l = Z_{l-1}ᵀ Δ_l   ``(d_{l-1}, d_l)``,   ∂f/∂b_l = 1ᵀ Δ_l  ``(1, d_l)``  (3.27)

The sum over the rows in ∂f/∂W_l and ∂f/∂b_l is the matrix form of "treat the rows
of Z_l one at a time" and add their contributions. The derivatives σ' are written
in terms of the outputs Z_l, so the forward pass need not keep A_l.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import mlp


def activation_derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    """σ'(A) expressed through Z = σ(A) ``(n, d)``.

    relu: 1[Z > 0]; sigmoid: Z (1 - Z); tanh: 1 - Z²; identity: 1.
    """
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "sigmoid":
        return z * (1 - z)
    if name == "tanh":
        return 1 - z * z
    if name == "identity":
        return torch.ones_like(z)
    mlp.activation(name)  # raises ValueError for unknown names
    raise ValueError(f"no derivative known for activation {name!r}")


def loss_gradient(scores: torch.Tensor, targets: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss value and ∂f/∂Z_{L+1} ``(n, C)`` for ``loss`` in {"cross_entropy", "mse"}.

    cross_entropy (3.11, mean over the n rows): ∂f/∂Z = (softmax(Z) - Y) / n.
    mse (3.7, ||Y - Z||_F², summed): ∂f/∂Z = 2 (Z - Y). ``targets`` are integer
    labels ``(n,)`` (turned into one-hot rows Y) or a matrix Y ``(n, C)``.
    """
    if targets.ndim == 1:
        y = mlp.one_hot(targets, scores.shape[1]).to(scores.dtype)
    else:
        y = targets.to(scores.dtype)
    if y.shape != scores.shape:
        raise ValueError(f"targets {tuple(y.shape)} do not match the scores {tuple(scores.shape)}")
    if loss == "cross_entropy":
        return mlp.cross_entropy(scores, y), (mlp.softmax(scores) - y) / scores.shape[0]
    if loss == "mse":
        return mlp.mse_loss(scores, y), 2 * (scores - y)
    raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")


@torch.no_grad()
def mlp_backward(x: torch.Tensor, targets: torch.Tensor, weights: Sequence[torch.Tensor],
                 biases: Sequence[torch.Tensor], hidden: str = "relu", loss: str = "cross_entropy",
                 last: str = "identity") -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor],
                                                 list[torch.Tensor]]:
    """One forward and one backward pass of the MLP, by hand (3.26)-(3.27).

    ``x`` ``(n, d_0)``; ``weights[l-1]`` = W_l ``(d_{l-1}, d_l)``; ``biases[l-1]`` = b_l
    ``(1, d_l)``. Returns ``(loss, grad_W, grad_b, deltas)`` where ``grad_W[l-1]`` =
    ∂f/∂W_l, ``grad_b[l-1]`` = ∂f/∂b_l and ``deltas[l-1]`` = Δ_l ``(n, d_l)``.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be (n, d_0), got shape {tuple(x.shape)}")
    zs = mlp.forward_propagation(x, weights, biases, hidden, last)   # [Z_0, ..., Z_{L+1}]
    value, dz = loss_gradient(zs[-1], targets, loss)
    L1 = len(weights)
    grad_w: list[torch.Tensor] = [None] * L1  # type: ignore[list-item]
    grad_b: list[torch.Tensor] = [None] * L1  # type: ignore[list-item]
    deltas: list[torch.Tensor] = [None] * L1  # type: ignore[list-item]
    delta = dz * activation_derivative(last, zs[-1])                  # Δ_{L+1}
    for l in range(L1, 0, -1):                                        # l = L+1, ..., 1
        deltas[l - 1] = delta
        grad_w[l - 1] = zs[l - 1].T @ delta                           # Z_{l-1}ᵀ Δ_l   (3.27)
        grad_b[l - 1] = delta.sum(dim=0, keepdim=True)                # column sums    (3.27)
        if l > 1:
            delta = (delta @ weights[l - 1].T) * activation_derivative(hidden, zs[l - 1])  # (3.26)
    return value, grad_w, grad_b, deltas


# ---------------------------------------------------------------------------
# Initialisation


INIT_SCHEMES = ("normal", "uniform", "xavier", "he")


def init_std(scheme: str, fan_in: int, fan_out: int, std: float = 1.0) -> float:
    """Standard deviation of the weights of a ``(fan_in, fan_out)`` layer.

    normal: ``std`` (a fixed value, e.g. 1 or 0.01); uniform: U(-1, 1), std 1/√3;
    xavier (Glorot & Bengio): √(2 / (fan_in + fan_out)); he (He et al.): √(2 / fan_in).
    """
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be positive, got {fan_in}, {fan_out}")
    if scheme == "normal":
        return float(std)
    if scheme == "uniform":
        return 1 / math.sqrt(3)
    if scheme == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "he":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"unknown initialisation {scheme!r}: expected one of {', '.join(INIT_SCHEMES)}")


@torch.no_grad()
def initialize_(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], scheme: str,
                std: float = 1.0, generator: torch.Generator | None = None) -> None:
    """Fill W_l ``(d_{l-1}, d_l)`` in place (Gaussian with :func:`init_std`, or U(-1, 1)); biases to 0."""
    for w, b in zip(weights, biases):
        if w.ndim != 2:
            raise ValueError(f"weights must be matrices, got shape {tuple(w.shape)}")
        s = init_std(scheme, w.shape[0], w.shape[1], std)
        if scheme == "uniform":
            w.copy_(torch.rand(w.shape, generator=generator, dtype=w.dtype) * 2 - 1)
        else:
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype) * s)
        b.zero_()


def layer_gradient_norms(grads: Sequence[torch.Tensor]) -> list[float]:
    """Frobenius norms ||∂f/∂W_l||_F of a list of gradients, layer 1 first."""
    return [float(g.norm()) for g in grads]
