"""Four (plus two) ways to tell a Transformer where each token is (chapter 10).

Attention itself is permutation-equivariant: without positional information the output
at token ``i`` does not depend on the order of the other tokens. The variants here are

* fixed sinusoidal encodings (Vaswani et al., 2017), added to the input:
  ``X_0 = E[ids] + PE[:n]`` with ``PE`` from :func:`dlbook.embeddings.sinusoidal_encoding``;
* learned absolute embeddings, ``X_0 = E[ids] + P[:n]`` with a trained table ``P``
  of shape ``(max_len, d_model)`` (BERT, GPT-2). Positions ``>= max_len`` have no row;
  :class:`LearnedPositions` can *clamp* them to the last trained row (``clamp=True``);
* a relative position bias (Shaw et al., 2018; Raffel et al., 2020), a learned scalar per
  head and clipped offset added to the scores,

      S_h[i, j] = q_i . k_j / sqrt(d) + b_h[clip(j - i, -D, D)],

  (T5 uses log-spaced buckets; we clip the offset at ``D`` instead);
* ALiBi (Press et al., 2022), a fixed bias ``-m_h |i - j|`` with one slope per head;
* rotary embeddings, RoPE (Su et al., 2024): queries and keys are rotated, pair of
  coordinates ``(2t, 2t+1)`` by the angle ``p w_t`` at position ``p``,

      q'_p = R(p) q_p,  k'_p = R(p) k_p,  so  q'_m . k'_n = q_m^T R(n - m) k_n,

  a score that depends on the positions only through the offset ``n - m``.

:class:`PositionalLM` puts any of them into a small causal model built from
:class:`dlbook.transformer.Transformer`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import causal_mask
from .embeddings import sinusoidal_encoding
from .transformer import Transformer, TransformerConfig

__all__ = ["LearnedPositions", "SinusoidalPositions", "RelativePositionBias", "alibi_slopes",
           "alibi_bias", "RotaryEmbedding", "apply_rotary", "PositionalLM", "METHODS"]

METHODS = ("none", "sinusoidal", "learned", "relative", "alibi", "rope")


class LearnedPositions(nn.Module):
    """A trained table ``P`` ``(max_len, d_model)``; forward(n) -> ``P[:n]`` ``(n, d_model)``.

    Rows start as N(0, 1) like ``nn.Embedding`` (the scale of the token embeddings).
    With ``clamp=True`` positions ``p >= max_len`` reuse the last row ``P[max_len - 1]``
    (there is nothing else a learned table can give them); otherwise they raise ValueError.
    """

    def __init__(self, max_len: int, d_model: int, clamp: bool = False):
        super().__init__()
        if max_len < 1 or d_model < 1:
            raise ValueError("max_len and d_model must be positive")
        self.max_len, self.clamp = max_len, clamp
        self.table = nn.Embedding(max_len, d_model)

    def forward(self, n: int) -> torch.Tensor:
        if n > self.max_len and not self.clamp:
            raise ValueError(f"sequence length {n} exceeds the {self.max_len} learned positions "
                             "(pass clamp=True to reuse the last one)")
        pos = torch.arange(n, device=self.table.weight.device).clamp(max=self.max_len - 1)
        return self.table(pos)


class SinusoidalPositions(nn.Module):
    """Fixed ``PE[:n]`` ``(n, d_model)`` of (Vaswani et al., 2017), computed for any ``n``."""

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        self.d_model, self.base = d_model, base

    def forward(self, n: int) -> torch.Tensor:
        return sinusoidal_encoding(n, self.d_model, self.base, dtype=torch.float32)


def _offsets(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """``(n_q, n_k)`` integer matrix of offsets ``j - i`` (key position minus query position)."""
    return torch.arange(n_k, device=device)[None, :] - torch.arange(n_q, device=device)[:, None]


class RelativePositionBias(nn.Module):
    """Learned bias ``b_h[clip(j - i, -D, D)]``: forward(n_q, n_k) -> ``(H, n_q, n_k)``.

    One scalar per head and offset, ``2 D + 1`` offsets in all (``D = max_distance``);
    offsets farther than ``D`` share the border value, so any length can be evaluated.
    The result broadcasts as the ``bias`` of scores ``(B, H, n_q, n_k)``.
    """

    def __init__(self, n_heads: int, max_distance: int):
        super().__init__()
        if n_heads < 1 or max_distance < 0:
            raise ValueError("n_heads must be >= 1 and max_distance >= 0")
        self.n_heads, self.max_distance = n_heads, max_distance
        self.table = nn.Parameter(torch.zeros(n_heads, 2 * max_distance + 1))

    def forward(self, n_q: int, n_k: int | None = None) -> torch.Tensor:
        n_k = n_q if n_k is None else n_k
        d = self.max_distance
        idx = _offsets(n_q, n_k, self.table.device).clamp(-d, d) + d     # (n_q, n_k) in 0..2D
        return self.table[:, idx]                                          # (H, n_q, n_k)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The geometric slopes ``m_h = 2^(-8 h / H)``, h = 1..H, of ALiBi, shape ``(H,)``."""
    if n_heads < 1:
        raise ValueError("n_heads must be >= 1")
    h = torch.arange(1, n_heads + 1, dtype=torch.float32)
    return 2.0 ** (-8.0 * h / n_heads)


def alibi_bias(n_heads: int, n_q: int, n_k: int | None = None, device=None) -> torch.Tensor:
    """ALiBi's fixed bias ``-m_h |j - i|`` of shape ``(H, n_q, n_k)``."""
    n_k = n_q if n_k is None else n_k
    dist = _offsets(n_q, n_k, device).abs().float()
    return -alibi_slopes(n_heads).to(dist.device)[:, None, None] * dist


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate each pair ``(x[..., 2t], x[..., 2t+1])`` by the angle ``p w_t``, w_t = base^(-2t/d).

    x ``(..., n, d)`` with d even; positions ``(n,)``. Returns ``R(p) x`` of the same shape,
    with the 2x2 blocks ``[[cos, -sin], [sin, cos]]`` (Su et al., 2024, eq. 34).
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary embeddings need an even head size, got {d}")
    if positions.dim() != 1 or positions.shape[0] != x.shape[-2]:
        raise ValueError(f"positions must have shape ({x.shape[-2]},), got {tuple(positions.shape)}")
    w = base ** (-torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d)   # (d/2,)
    angle = positions.to(torch.float64)[:, None] * w[None, :]                         # (n, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


class RotaryEmbedding:
    """RoPE as the ``rope`` hook of :class:`dlbook.attention.MultiHeadAttention`.

    ``rope(q, k) -> (R q, R k)`` on ``(B, H, n, d_head)`` tensors, positions ``0..n-1``
    (queries and keys of self-attention share the positions). No parameters.
    """

    def __init__(self, base: float = 10000.0):
        if base <= 1:
            raise ValueError("base must be > 1")
        self.base = base

    def __call__(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if q.shape[-2] != k.shape[-2]:
            raise ValueError("this RoPE hook is for self-attention (as many queries as keys)")
        pos = torch.arange(q.shape[-2], device=q.device)
        return apply_rotary(q, pos, self.base), apply_rotary(k, pos, self.base)

    def __repr__(self) -> str:
        return f"RotaryEmbedding(base={self.base})"


class PositionalLM(nn.Module):
    """A small causal sequence model whose positional information is one of :data:`METHODS`.

    ids ``(B, n)`` -> logits ``(B, n, vocab_size)``; token ``t`` sees tokens ``0..t``.
    ``max_len`` is the training length: only ``"learned"`` depends on it (its table has
    ``max_len`` rows, clamped beyond); every other method runs at any length.
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, max_len: int, method: str,
                 max_distance: int = 16):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.vocab_size, self.n_heads = method, vocab_size, cfg.n_heads
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos: nn.Module | None = None
        if method == "learned":
            self.pos = LearnedPositions(max_len, cfg.d_model, clamp=True)
        elif method == "sinusoidal":
            self.pos = SinusoidalPositions(cfg.d_model)
        self.rel = RelativePositionBias(cfg.n_heads, max_distance) if method == "relative" else None
        self.transformer = Transformer(cfg)
        if method == "rope":
            rope = RotaryEmbedding()
            for block in self.transformer.blocks:
                block.attn.rope = rope
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"token ids must have shape (B, n), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}")
        n = ids.shape[1]
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(n).to(x.device, x.dtype)
        bias = None
        if self.rel is not None:
            bias = self.rel(n)
        elif self.method == "alibi":
            bias = alibi_bias(self.n_heads, n, device=ids.device)
        mask = causal_mask(n, device=ids.device)
        return self.head(self.transformer(x, mask=mask, bias=bias))
