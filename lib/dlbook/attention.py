"""Scaled dot-product attention, written as in Baggag & Saad §4.2 (Algorithms 2 and 3).

Shapes follow the paper: a sequence is a matrix ``X`` of shape ``(n, d_model)``; a
batch adds leading dimensions ``(..., n, d_model)``. Queries, keys and values are

    Q, K, V = X W_Q, X W_K, X W_V                                   (4.8)

and one head computes

    A = softmax(Q K^T / sqrt(d_k)) V                                (4.7), Algorithm 2.

Masks are boolean and broadcast to the score matrix ``(..., n_queries, n_keys)``:
``True`` means "may attend" (the convention of ``F.scaled_dot_product_attention``, the
opposite of ``nn.MultiheadAttention``'s ``attn_mask``). An additive ``bias`` of the same
shape (relative positions, ALiBi...) is added to the scores before the softmax.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Lower-triangular ``(n, n)`` boolean mask: query i may attend to keys 0..i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Key-padding mask ``(B, 1, 1, n)`` from sequence lengths ``(B,)``: key j valid iff j < length.

    It broadcasts over heads and queries in scores of shape ``(B, H, n, n)``.
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a 1-D tensor of shape (B,), got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > n:
        raise ValueError(f"lengths must lie in 1..{n}, got {lengths.tolist()}")
    keys = torch.arange(n, device=lengths.device)
    return (keys[None, :] < lengths[:, None])[:, None, None, :]


def _check_mask(mask: torch.Tensor | None, scores: torch.Tensor) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}; "
                        "pass additive scores as bias=")
    try:
        shape = torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        shape = None
    if shape != scores.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores "
                         f"{tuple(scores.shape)} (..., n_queries, n_keys)")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              bias: torch.Tensor | None = None, scale: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k) + bias, masked) V, returning ``(output, weights)``.

    q: ``(..., n, d_k)``; k: ``(..., m, d_k)``; v: ``(..., m, d_v)``; mask (bool) and bias
    broadcast to ``(..., n, m)``. Output ``(..., n, d_v)``, weights ``(..., n, m)`` with rows
    summing to one. A query row whose keys are all masked raises ``ValueError`` (its
    softmax would be 0/0). ``scale`` defaults to ``1/sqrt(d_k)``.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries have size {q.shape[-1]} but keys {k.shape[-1]}: d_k must agree")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2]} values")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        _check_mask(mask, scores)
        if not bool(mask.any(-1).all()):
            raise ValueError("a query has every key masked; its attention weights are undefined")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0, the feature map of Katharopoulos et al. (2020)."""
    return F.elu(x) + 1


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     feature_map: Callable[[torch.Tensor], torch.Tensor] = elu_feature_map) -> torch.Tensor:
    """Linear attention: the softmax kernel exp(q.k) replaced by phi(q).phi(k).

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j)), with the sums
    over all keys (or over j <= i when ``causal``). q, k ``(..., n, d_k)``, v ``(..., n, d_v)``
    -> ``(..., n, d_v)``. Cost O(n d_k d_v) instead of the O(n^2) of the score matrix.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries have size {q.shape[-1]} but keys {k.shape[-1]}: d_k must agree")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2]} values")
    fq, fk = feature_map(q), feature_map(k)
    if causal:
        if q.shape[-2] != k.shape[-2]:
            raise ValueError("causal linear attention needs as many queries as keys")
        kv = torch.cumsum(fk.unsqueeze(-1) * v.unsqueeze(-2), dim=-3)     # (..., n, d_k, d_v)
        num = (fq.unsqueeze(-2) @ kv).squeeze(-2)
        den = (fq * torch.cumsum(fk, dim=-2)).sum(-1, keepdim=True)
    else:
        num = fq @ (fk.transpose(-2, -1) @ v)                              # (d_k, d_v) summary
        den = fq @ fk.sum(-2).unsqueeze(-1)
    return num / den


def single_head(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2, SingleHead(X | W_Q, W_K, W_V) -> ``(A, probs)``.

    x ``(..., n, d_model)``; w_q, w_k ``(d_model, d_k)``; w_v ``(d_model, d_v)``.
    Returns ``A = probs V`` of shape ``(..., n, d_v)`` and ``probs`` ``(..., n, n)``.
    """
    for name, w in (("W_Q", w_q), ("W_K", w_k), ("W_V", w_v)):
        if w.dim() != 2 or w.shape[0] != x.shape[-1]:
            raise ValueError(f"{name} must have shape (d_model={x.shape[-1]}, d), got {tuple(w.shape)}")
    q, k, v = x @ w_q, x @ w_k, x @ w_v                    # line 2
    return attention(q, k, v, mask=mask)                  # lines 3-5


def _check_heads(w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor,
                 d_model: int) -> tuple[int, int]:
    if not (w_q.dim() == w_k.dim() == w_v.dim() == 3):
        raise ValueError("per-head weights must have shape (n_heads, d_model, d_head)")
    if not (w_q.shape == w_k.shape):
        raise ValueError(f"W_Q {tuple(w_q.shape)} and W_K {tuple(w_k.shape)} must have the same shape")
    if w_q.shape[0] != w_v.shape[0]:
        raise ValueError(f"{w_q.shape[0]} query heads but {w_v.shape[0]} value heads")
    if w_q.shape[1] != d_model or w_v.shape[1] != d_model:
        raise ValueError(f"per-head weights must map d_model={d_model} inputs, got "
                         f"{tuple(w_q.shape)} and {tuple(w_v.shape)}")
    h, d_v = w_v.shape[0], w_v.shape[2]
    if w_o.shape != (h * d_v, d_model):
        raise ValueError(f"W_O must have shape (n_heads*d_head={h * d_v}, d_model={d_model}), "
                         f"got {tuple(w_o.shape)}")
    return h, d_v


def multi_head(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
               w_o: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 3 and (4.9): ``A = [HA_1 || ... || HA_H] W_O``, one SingleHead per head.

    x ``(..., n, d_model)``; w_q, w_k, w_v ``(H, d_model, d_head)``; w_o
    ``(H * d_head, d_model)``. Returns ``A`` ``(..., n, d_model)`` and the per-head
    attention probabilities ``(..., H, n, n)``.
    """
    h, _ = _check_heads(w_q, w_k, w_v, w_o, x.shape[-1])
    heads, probs = [], []
    for i in range(h):                                    # lines 2-4
        a, p = single_head(x, w_q[i], w_k[i], w_v[i], mask=mask)
        heads.append(a)
        probs.append(p)
    return torch.cat(heads, dim=-1) @ w_o, torch.stack(probs, dim=-3)


def multi_head_sum_form(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
                        w_o: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(4.11)-(4.12): ``sum_h softmax(...) X W_{V,h} W_{O,h}`` with W_O cut into row blocks.

    Same arguments and output as :func:`multi_head`; each head writes straight into the
    model dimension through its own ``W_{O,h}`` of shape ``(d_head, d_model)``.
    """
    h, d_v = _check_heads(w_q, w_k, w_v, w_o, x.shape[-1])
    out = 0
    for i in range(h):
        w_o_h = w_o[i * d_v:(i + 1) * d_v]
        _, p = single_head(x, w_q[i], w_k[i], w_v[i], mask=mask)
        out = out + p @ (x @ (w_v[i] @ w_o_h))
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention (4.9) as an ``nn.Module``, batched over heads.

    The three projections are stored as ``nn.Linear(d_model, n_heads * d_head)`` whose
    weight is ``W^T`` with the heads side by side, and the output projection as
    ``nn.Linear(n_heads * d_head, d_model)``. forward(x) takes ``(B, n, d_model)`` and
    returns ``(B, n, d_model)``; ``context`` (``(B, m, d_model)``) gives cross-attention.

    - ``fast=True`` computes the heads with ``F.scaled_dot_product_attention``
      (same result, fused kernels; no weights are returned).
    - ``rope``: optional callable ``(q, k) -> (q, k)`` applied to ``(B, H, n, d_head)``
      queries and keys after the projection (rotary positions, chapter 10).
    - ``keep_weights=True`` stores the last attention probabilities ``(B, H, n, m)`` in
      ``self.weights`` (attention maps), which forces the explicit path.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int | None = None, bias: bool = True,
                 dropout: float = 0.0, fast: bool = False):
        super().__init__()
        if d_head is None:
            if d_model % n_heads:
                raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}; "
                                 "pass d_head explicitly")
            d_head = d_model // n_heads
        if min(d_model, n_heads, d_head) < 1:
            raise ValueError("d_model, n_heads and d_head must be positive")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_head
        self.q = nn.Linear(d_model, n_heads * d_head, bias=bias)
        self.k = nn.Linear(d_model, n_heads * d_head, bias=bias)
        self.v = nn.Linear(d_model, n_heads * d_head, bias=bias)
        self.out = nn.Linear(n_heads * d_head, d_model, bias=bias)
        self.dropout = dropout
        self.fast = fast
        self.rope: Callable | None = None
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def _split(self, t: torch.Tensor) -> torch.Tensor:      # (B, n, H*dh) -> (B, H, n, dh)
        return t.unflatten(-1, (self.n_heads, self.d_head)).transpose(-3, -2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"expected inputs with d_model={self.d_model} features, got {x.shape[-1]}")
        ctx = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(ctx)), self._split(self.v(ctx))
        if self.rope is not None:
            q, k = self.rope(q, k)
        p = self.dropout if self.training else 0.0
        if self.fast and not self.keep_weights:
            attn_mask = mask
            if bias is not None:
                attn_mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            y, w = attention(q, k, v, mask=mask, bias=bias)
            if self.keep_weights:
                self.weights = w.detach()
            if p > 0:  # dropout on the attention probabilities, as in the original Transformer
                y = F.dropout(w, p, training=True) @ v
        return self.out(y.transpose(-3, -2).flatten(-2))

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The paper's matrices: W_Q, W_K, W_V of shape ``(H, d_model, d_head)`` and W_O."""
        def per_head(lin: nn.Linear) -> torch.Tensor:
            return lin.weight.T.unflatten(1, (self.n_heads, self.d_head)).permute(1, 0, 2)
        return per_head(self.q), per_head(self.k), per_head(self.v), self.out.weight.T

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, fast: bool = False) -> "MultiHeadAttention":
        """Copy the weights of a ``nn.MultiheadAttention`` (batch_first, same q/k/v size)."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("only nn.MultiheadAttention with kdim == vdim == embed_dim is supported")
        has_bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, bias=has_bias, dropout=mha.dropout, fast=fast)
        new = new.to(mha.in_proj_weight.dtype)
        w = mha.in_proj_weight.detach().chunk(3)
        with torch.no_grad():
            for lin, wi in zip((new.q, new.k, new.v), w):
                lin.weight.copy_(wi)
            new.out.weight.copy_(mha.out_proj.weight)
            if has_bias:
                for lin, bi in zip((new.q, new.k, new.v), mha.in_proj_bias.detach().chunk(3)):
                    lin.bias.copy_(bi)
                new.out.bias.copy_(mha.out_proj.bias)
        return new

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, d_head={self.d_head}, fast={self.fast}"
