"""The multilayer perceptron in matrix form (chapter 01; Baggag & Saad, §3.1-3.2).

Samples are the *rows* of ``X`` (shape ``(n, d_0)``); layer ``l`` maps
``Z_{l-1}`` of shape ``(n, d_{l-1})`` to

    Z_l = σ(Z_{l-1} W_l + b_l),   W_l ∈ R^{d_{l-1} × d_l},  b_l ∈ R^{1 × d_l}   (3.6)

where ``+ b_l`` broadcasts the row vector over the ``n`` rows. Everything
here is written with plain tensor operations; the reference implementations
(``torch.softmax``, ``F.cross_entropy``, ``nn.Linear``...) are only used by
the tests and notebooks that check these functions against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# ---------------------------------------------------------------------------
# Activations (3.3) and friends, element-wise


def relu(t: torch.Tensor) -> torch.Tensor:
    """σ(t) = max{0, t} (3.3)."""
    return torch.where(t > 0, t, torch.zeros_like(t))


def sigmoid(t: torch.Tensor) -> torch.Tensor:
    """σ(t) = 1 / (1 + e^{-t}), values in (0, 1)."""
    return 1.0 / (1.0 + torch.exp(-t))


def tanh(t: torch.Tensor) -> torch.Tensor:
    """tanh(t) = (e^t - e^{-t}) / (e^t + e^{-t}), values in (-1, 1).

    Computed as sign(t) (1 - e^{-2|t|}) / (1 + e^{-2|t|}) with ``expm1`` for
    1 - e^{-2|t|}: no overflow for large |t| and full relative precision for tiny t
    (the shortcut 2 σ(2t) - 1 cancels to 0 when |t| < 1e-16).
    """
    m = torch.expm1(-2.0 * t.abs())          # e^{-2|t|} - 1, in (-1, 0]
    return torch.sign(t) * (-m) / (2.0 + m)


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "identity": identity,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Look an activation up by name; unknown names raise ``ValueError``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ---------------------------------------------------------------------------
# One-hot, softmax and the two losses


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows of the identity: label ``c`` becomes e_{c+1} ∈ R^C. ``(n,)`` ints -> ``(n, C)`` floats."""
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"one_hot expects a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return torch.eye(num_classes, device=labels.device)[labels.long()]


def softmax(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Row-wise softmax(z / T) = exp(z/T) / sum[exp(z/T)] (3.9 and its footnote).

    Subtracting each row's maximum first changes nothing mathematically and
    keeps ``exp`` from overflowing. ``z``: ``(..., C)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = z / temperature
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log softmax(z), computed as z - max - log sum exp(z - max) to avoid log(0)."""
    s = z - z.max(dim=-1, keepdim=True).values
    return s - torch.log(torch.exp(s).sum(dim=-1, keepdim=True))


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """||Y - Φ||_F² (3.7) with ``reduction="sum"``; divided by the number of entries with ``"mean"``."""
    if outputs.shape != targets.shape:
        raise ValueError(f"shapes differ: outputs {tuple(outputs.shape)} vs targets {tuple(targets.shape)}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    sq = ((targets - outputs) ** 2).sum()
    return sq if reduction == "sum" else sq / outputs.numel()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L = -(1/n) Σ_i (y_i, log ŷ_i) with ŷ_i = softmax(z_i) (3.10-3.12).

    ``logits``: ``(n, C)`` rows z_i = φ(x_i). ``targets``: ``(n,)`` integer
    labels, or ``(n, C)`` one-hot (or any probability) rows y_i.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (n, C), got shape {tuple(logits.shape)}")
    if targets.ndim == 1:
        targets = one_hot(targets, logits.shape[1]).to(logits.dtype)
    if targets.shape != logits.shape:
        raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    return -(targets * log_softmax(logits)).sum(dim=1).mean()


# ---------------------------------------------------------------------------
# Algorithm 1 (forward propagation), batched


def forward_propagation(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                        hidden: str = "relu", last: str = "identity") -> list[torch.Tensor]:
    """Algorithm 1 on a batch: Z_0 = X, Z_l = σ(Z_{l-1} W_l + b_l) for l = 1..L+1.

    Returns ``[Z_0, Z_1, ..., Z_{L+1}]`` with ``Z_l`` of shape ``(n, d_l)``. The last
    layer uses ``last`` (``identity`` gives the scores that softmax turns into
    probabilities); every other layer uses ``hidden``.
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"need as many weights as biases (>= 1), got {len(weights)} and {len(biases)}")
    sigma, sigma_last = activation(hidden), activation(last)
    zs = [x]
    for l, (w, b) in enumerate(zip(weights, biases), start=1):
        z = zs[-1]
        if z.shape[-1] != w.shape[0] or b.shape[-1] != w.shape[1]:
            raise ValueError(f"layer {l}: Z_{l - 1} is {tuple(z.shape)}, W_{l} is {tuple(w.shape)}, "
                             f"b_{l} is {tuple(b.shape)}; need Z (n, d), W (d, d'), b (1, d')")
        f = sigma_last if l == len(weights) else sigma
        zs.append(f(z @ w + b))
    return zs


@dataclass(frozen=True)
class MLPConfig:
    """Layer widths ``[d_0, d_1, ..., d_{L+1}]`` and the hidden activation."""

    sizes: tuple[int, ...]
    activation: str = "relu"

    def __post_init__(self):
        if len(self.sizes) < 2 or any(not isinstance(d, int) or d < 1 for d in self.sizes):
            raise ValueError(f"sizes must be >= 2 positive ints [d_0, ..., d_(L+1)], got {self.sizes}")
        activation(self.activation)


class MLP(nn.Module):
    """A multilayer perceptron that stores W_l as ``(d_{l-1}, d_l)`` matrices, as in (3.6).

    ``forward(X)`` returns the scores Z_{L+1} ``(n, d_{L+1})`` (no activation on
    the last layer). Initialisation follows ``nn.Linear``: entries uniform in
    ±1/sqrt(d_{l-1}), so a network copied from ``nn.Linear`` layers with
    :meth:`from_linear` computes exactly the same function.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        pairs = list(zip(config.sizes[:-1], config.sizes[1:]))
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(a, b)) for a, b in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(1, b)) for _, b in pairs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[0])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)  # images (n, m1, m2) are vectorised to (n, m1*m2)
        return forward_propagation(x, list(self.weights), list(self.biases), self.config.activation)[-1]

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All of ``Z_0 ... Z_{L+1}`` (for plots of what each layer computes)."""
        return forward_propagation(x.reshape(x.shape[0], -1), list(self.weights), list(self.biases),
                                   self.config.activation)

    @classmethod
    def from_linear(cls, layers: Sequence[nn.Linear], activation: str = "relu") -> "MLP":
        """Copy ``nn.Linear`` layers (which store Wᵀ, shape ``(d_l, d_{l-1})``) into an MLP."""
        if not layers or any(not isinstance(l, nn.Linear) or l.bias is None for l in layers):
            raise TypeError("from_linear needs a non-empty sequence of nn.Linear layers with biases")
        sizes = (layers[0].in_features, *(l.out_features for l in layers))
        mlp = cls(MLPConfig(sizes, activation))
        with torch.no_grad():
            for w, b, lin in zip(mlp.weights, mlp.biases, layers):
                w.copy_(lin.weight.T)
                b.copy_(lin.bias[None, :])
        return mlp

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
