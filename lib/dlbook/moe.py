"""A Switch-Transformer mixture-of-experts feed-forward layer (chapter 10).

The dense MLP sublayer (4.13) is replaced by ``N`` experts ``E_1..E_N`` (each a
:class:`dlbook.transformer.FeedForward`) and a router ``W_r`` ``(d_model, N)``. A token
``x`` goes to ONE expert (top-1 routing, Fedus et al., 2022):

    p(x) = softmax(x W_r),   e(x) = argmax_i p_i(x),   y = p_{e(x)}(x) * E_{e(x)}(x).

Multiplying by the gate ``p_e`` is what lets the router learn. Shazeer et al. (2017) used
the top-k of a noisy gate; Switch keeps k = 1, so each token costs one expert's compute
while the layer holds ``N`` experts' parameters.

Load balancing. Over a batch of ``T`` tokens let ``f_i`` be the fraction of tokens sent to
expert ``i`` and ``P_i`` the mean router probability of expert ``i``; the auxiliary loss

    L_aux = N * sum_i f_i P_i                               (Fedus et al., 2022, eq. 4)

equals 1 when both are uniform and grows when the router favours a few experts. It is
added to the task loss with a small weight ``alpha`` (0.01 in the paper).

Capacity. With ``capacity_factor`` c, each expert takes at most ``ceil(c T / N)`` tokens
of a batch (in token order); the overflow is *dropped*: its output is zero, so in a
residual block the token passes through unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .transformer import FeedForward

__all__ = ["load_balancing_loss", "SwitchFeedForward", "switch_reference", "moe_layers",
           "aux_loss", "expert_counts"]


def load_balancing_loss(probs: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """``N * sum_i f_i P_i`` for router probabilities ``(T, N)`` and chosen experts ``(T,)``."""
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (T, n_experts), got {tuple(probs.shape)}")
    if expert.shape != probs.shape[:1]:
        raise ValueError(f"expert must have shape ({probs.shape[0]},), got {tuple(expert.shape)}")
    n = probs.shape[1]
    f = torch.bincount(expert, minlength=n).to(probs.dtype) / expert.shape[0]
    return n * (f * probs.mean(0)).sum()


class SwitchFeedForward(nn.Module):
    """Top-1 mixture of ``n_experts`` feed-forward experts: ``(..., d_model) -> (..., d_model)``.

    After each forward pass: ``aux_loss`` (the balancing loss, a scalar tensor with
    gradient), ``counts`` ``(n_experts,)`` tokens routed to each expert, ``dropped`` the
    number of tokens over capacity, ``last_expert`` ``(T,)`` the chosen experts.
    """

    def __init__(self, d_model: int, d_mlp: int, n_experts: int, capacity_factor: float | None = None,
                 activation: str = "relu"):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError("capacity_factor must be positive (or None for no limit)")
        self.d_model, self.n_experts, self.capacity_factor = d_model, n_experts, capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_mlp, activation) for _ in range(n_experts))
        self.aux_loss = torch.zeros(())
        self.counts = torch.zeros(n_experts, dtype=torch.long)
        self.dropped = 0
        self.last_expert: torch.Tensor | None = None

    def capacity(self, n_tokens: int) -> int:
        """Tokens one expert may take from a batch of ``n_tokens``: ``ceil(c T / N)``."""
        if self.capacity_factor is None:
            return n_tokens
        return math.ceil(self.capacity_factor * n_tokens / self.n_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"expected inputs with d_model={self.d_model} features, got {x.shape[-1]}")
        flat = x.reshape(-1, self.d_model)                                  # (T, d)
        probs = torch.softmax(self.router(flat), dim=-1)                    # (T, N)
        gate, expert = probs.max(dim=-1)                                    # (T,), (T,)
        cap = self.capacity(flat.shape[0])
        out = torch.zeros_like(flat)
        dropped = 0
        for i, ffn in enumerate(self.experts):
            idx = (expert == i).nonzero().squeeze(-1)
            dropped += max(0, idx.numel() - cap)
            idx = idx[:cap]
            if idx.numel():
                out[idx] = gate[idx, None] * ffn(flat[idx])
        self.aux_loss = load_balancing_loss(probs, expert)
        self.counts = torch.bincount(expert.detach(), minlength=self.n_experts).cpu()
        self.dropped, self.last_expert = dropped, expert.detach()
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, capacity_factor={self.capacity_factor}"


@torch.no_grad()
def switch_reference(layer: SwitchFeedForward, x: torch.Tensor) -> torch.Tensor:
    """The same layer, one token at a time (no capacity limit): the definition spelled out."""
    flat = x.reshape(-1, layer.d_model)
    rows = []
    for t in range(flat.shape[0]):
        p = torch.softmax(layer.router(flat[t]), dim=-1)
        e = int(p.argmax())
        rows.append(p[e] * layer.experts[e](flat[t]))
    return torch.stack(rows).reshape(x.shape)


def moe_layers(model: nn.Module) -> list[SwitchFeedForward]:
    """Every :class:`SwitchFeedForward` inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, SwitchFeedForward)]


def aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the balancing losses of the model's MoE layers from its last forward pass."""
    layers = moe_layers(model)
    if not layers:
        raise ValueError("the model contains no SwitchFeedForward layer")
    return sum(m.aux_loss for m in layers)


def expert_counts(model: nn.Module) -> torch.Tensor:
    """``(n_layers, n_experts)`` tokens routed per expert in the last forward pass."""
    return torch.stack([m.counts for m in moe_layers(model)])
