"""Batch normalisation and Dynamic Tanh written from scratch (chapter 03; reused in chapter 09).

**BatchNorm** (Ioffe & Szegedy, 2015) normalises each feature over the mini-batch.
For ``x`` of shape ``(n, d)`` in training mode

    μ = (1/n) Σ_i x_i,   σ² = (1/n) Σ_i (x_i - μ)²   (biased, used to normalise)
    y = γ ⊙ (x - μ) / √(σ² + ε) + β                                  γ, β ∈ R^d

and the running estimates used at inference are updated with momentum m:

    running_mean ← (1 - m) running_mean + m μ
    running_var  ← (1 - m) running_var  + m σ² n / (n - 1)       (the unbiased variance)

In evaluation mode ``y = γ (x - running_mean) / √(running_var + ε) + β``. These are the
conventions of ``torch.nn.BatchNorm1d``.

**Dynamic Tanh** (DyT, Zhu et al., 2025) replaces a normalisation layer by an
element-wise, statistics-free map with one learnable scalar α:

    DyT(x) = γ ⊙ tanh(α x) + β,   α ∈ R (init 0.5),   γ, β ∈ R^d

acting on the last axis of ``x`` ``(..., d)``, so that it can stand in for
``nn.LayerNorm(d)`` in a Transformer or for a BatchNorm layer in an MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode batch normalisation of ``x`` ``(n, d)``; returns ``(y, μ, σ²)`` (σ² biased)."""
    if x.ndim != 2:
        raise ValueError(f"batch_norm expects x of shape (n, d), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError("batch statistics need at least 2 samples in the batch")
    mean = x.mean(dim=0)
    var = ((x - mean) ** 2).mean(dim=0)
    y = gamma * (x - mean) / torch.sqrt(var + eps) + beta
    return y, mean, var


def batch_norm_backward(dy: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-5
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hand-derived gradients of training-mode BatchNorm: ``(dx, dγ, dβ)`` from ``dy`` ``(n, d)``.

    With x̂ = (x - μ)/√(σ² + ε):  dβ = Σ_i dy_i,  dγ = Σ_i dy_i ⊙ x̂_i,
    dx = γ / (n √(σ² + ε)) ⊙ (n dy - Σ_i dy_i - x̂ ⊙ Σ_i dy_i ⊙ x̂_i).
    The last two terms exist because μ and σ² depend on every sample of the batch.
    """
    if dy.shape != x.shape or x.ndim != 2:
        raise ValueError(f"dy and x must both be (n, d), got {tuple(dy.shape)} and {tuple(x.shape)}")
    n = x.shape[0]
    mean = x.mean(dim=0)
    inv_std = 1.0 / torch.sqrt(((x - mean) ** 2).mean(dim=0) + eps)
    xhat = (x - mean) * inv_std
    dbeta = dy.sum(dim=0)
    dgamma = (dy * xhat).sum(dim=0)
    dx = gamma * inv_std / n * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


class BatchNorm(nn.Module):
    """BatchNorm over the features of ``(n, d)`` inputs, a from-scratch ``nn.BatchNorm1d(d)``.

    Parameters ``weight`` (γ, init 1) and ``bias`` (β, init 0); buffers ``running_mean``
    (init 0), ``running_var`` (init 1) and ``num_batches_tracked``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected input (n, {self.num_features}), got {tuple(x.shape)}")
        if self.training:
            y, mean, var = batch_norm(x, self.weight, self.bias, self.eps)
            n = x.shape[0]
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))   # unbiased estimate
                self.num_batches_tracked += 1
            return y
        return self.weight * (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class DynamicTanh(nn.Module):
    """DyT(x) = γ ⊙ tanh(α x) + β on the last axis of ``x`` ``(..., d)`` (Zhu et al., 2025).

    α is one learnable scalar (``alpha_init``, 0.5 by default); γ (init 1) and β
    (init 0) are vectors of length ``num_features``. No statistics are computed, so
    the output of a sample never depends on the other samples of the batch and
    training and evaluation modes compute the same function.
    """

    def __init__(self, num_features: int, alpha_init: float = 0.5):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.num_features:
            raise ValueError(f"expected the last axis to have {self.num_features} features, got {tuple(x.shape)}")
        return self.weight * torch.tanh(self.alpha * x) + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha_init={float(self.alpha):.3g}"


NORMS = ("none", "batch", "dyt")


def deep_mlp(sizes: Sequence[int], norm: str = "none", activation: str = "relu", init: str = "he",
             std: float = 1.0, alpha_init: float = 0.5) -> nn.Sequential:
    """A plain deep MLP ``Linear → [norm] → activation`` for every hidden layer, scores out.

    ``sizes`` = ``[d_0, ..., d_{L+1}]``; ``norm`` in {"none", "batch", "dyt"} inserts
    :class:`BatchNorm` or :class:`DynamicTanh` after each hidden ``Linear``; ``init``
    is a scheme of :func:`dlbook.backprop.init_std` for the weights (biases 0), with
    ``std`` for the "normal" scheme; ``alpha_init`` is DyT's initial α.
    """
    from .backprop import init_std

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if activation not in acts:
        raise ValueError(f"activation must be one of {', '.join(acts)}, got {activation!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least [d_0, d_out], got {sizes}")
    layers: list[nn.Module] = [nn.Flatten()]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            s = init_std(init, a, b, std)
            if init == "uniform":
                lin.weight.uniform_(-1, 1)
            else:
                lin.weight.normal_(0, s)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(pairs) - 1:
            if norm == "batch":
                layers.append(BatchNorm(b))
            elif norm == "dyt":
                layers.append(DynamicTanh(b, alpha_init))
            layers.append(acts[activation]())
    return nn.Sequential(*layers)


class ResidualMLP(nn.Module):
    """A pre-norm residual MLP: ``h ← h + W_2 σ(W_1 norm(h))`` for ``depth`` blocks of width ``d``.

    ``x`` ``(n, d_in)`` (images are flattened) → ``Linear(d_in, d)`` → blocks →
    ``norm`` → ``Linear(d, classes)``. This is the layout of a Transformer's feed-forward
    sub-layers (chapter 09), where DyT replaces LayerNorm. ``norm`` in {"none", "batch",
    "dyt"}; hidden weights use He initialisation, the second matrix of each block is
    scaled by ``1/√depth`` so that the sum of the branches keeps a bounded variance.
    """

    def __init__(self, d_in: int, width: int, classes: int, depth: int, norm: str = "none",
                 alpha_init: float = 0.5):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")

        def make_norm() -> nn.Module:
            return {"none": nn.Identity, "batch": lambda: BatchNorm(width),
                    "dyt": lambda: DynamicTanh(width, alpha_init)}[norm]()

        self.embed = nn.Linear(d_in, width)
        self.norms = nn.ModuleList(make_norm() for _ in range(depth))
        self.fc1 = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.fc2 = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.final_norm = make_norm()
        self.head = nn.Linear(width, classes)
        with torch.no_grad():
            for lin in [self.embed, *self.fc1, *self.fc2, self.head]:
                nn.init.normal_(lin.weight, 0.0, (2.0 / lin.in_features) ** 0.5)
                lin.bias.zero_()
            for lin in self.fc2:
                lin.weight.mul_(depth ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], -1))
        for norm, fc1, fc2 in zip(self.norms, self.fc1, self.fc2):
            h = h + fc2(torch.relu(fc1(norm(h))))
        return self.head(self.final_norm(h))
