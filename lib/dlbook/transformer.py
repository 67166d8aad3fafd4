"""The Transformer block and two small models built from it (Baggag & Saad §4.2, Table 2).

One block maps ``X_{l-1}`` ``(B, n, d_model)`` to ``X_l`` of the same shape (4.2). With
pre-LayerNorm (the default, (4.4)-(4.5)):

    Y_l = X_{l-1} + ATT(LN(X_{l-1}))
    X_l = Y_l + MLP(LN(Y_l))

and with post-LayerNorm (Table 2, left column):

    Y_l = LN(X_{l-1} + ATT(X_{l-1}))
    X_l = LN(Y_l + MLP(Y_l)).

A stack of blocks is the composition (4.3); a pre-LN stack ends with one more LN (4.6),
and a language model then applies a bias-free linear layer to get logits.
The attention sublayer is :class:`dlbook.attention.MultiHeadAttention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention, causal_mask, padding_mask
from .embeddings import sinusoidal_encoding
from .normalization import DynamicTanh

NORMS = ("layer", "dyt", "batch", "none")
POSITIONS = ("pre", "post")
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm (4.16) over the last axis: ``(x - mu(x)) / sqrt(sigma^2 + eps) * gamma + beta``.

    x ``(..., d)``; gamma, beta ``(d,)``. The variance is the biased one (divide by d),
    as in ``nn.LayerNorm``.
    """
    if gamma.shape != x.shape[-1:] or beta.shape != x.shape[-1:]:
        raise ValueError(f"gamma and beta must have shape ({x.shape[-1]},), got "
                         f"{tuple(gamma.shape)} and {tuple(beta.shape)}")
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * gamma + beta


class LayerNorm(nn.Module):
    """(4.16) as a module with learned ``gamma`` (init 1) and ``beta`` (init 0) of size ``d``."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class TokenBatchNorm(nn.Module):
    """BatchNorm over the feature axis of token/node features ``(..., d)``.

    Statistics are taken over every token of the batch (the "BatchNorm" choice of
    Table 3 for graph transformers).
    """

    def __init__(self, d: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(d, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def make_norm(kind: str, d: int) -> nn.Module:
    """``"layer"`` (4.16), ``"dyt"`` (Dynamic Tanh), ``"batch"`` or ``"none"`` (identity)."""
    if kind == "layer":
        return LayerNorm(d)
    if kind == "dyt":
        return DynamicTanh(d)
    if kind == "batch":
        return TokenBatchNorm(d)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class FeedForward(nn.Module):
    """The MLP sublayer (4.13): ``act(Y W_up + b_up) W_down + b_down``.

    Y ``(..., d_model)``; W_up ``(d_model, d_mlp)``; W_down ``(d_mlp, d_model)``.
    """

    def __init__(self, d_model: int, d_mlp: int, activation: str = "relu", dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.up = nn.Linear(d_model, d_mlp, bias=bias)
        self.down = nn.Linear(d_mlp, d_model, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.act(self.up(y))))


@dataclass
class TransformerConfig:
    """Sizes and choices of a Transformer stack.

    ``norm_position`` is ``"pre"`` or ``"post"`` (Table 2); ``norm`` is ``"layer"``,
    ``"dyt"``, ``"batch"`` or ``"none"``; ``final_norm`` (4.6) defaults to True for pre-LN
    and False for post-LN (whose last sublayer already ends with a norm); ``fast``
    routes attention through ``F.scaled_dot_product_attention``.
    """

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_mlp: int | None = None          # 4 * d_model when None
    dropout: float = 0.0
    norm: str = "layer"
    norm_position: str = "pre"
    activation: str = "relu"
    bias: bool = True
    final_norm: bool | None = None
    fast: bool = False

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.norm_position not in POSITIONS:
            raise ValueError(f"norm_position must be one of {POSITIONS}, got {self.norm_position!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_layers < 1:
            raise ValueError("n_layers must be at least 1")
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        if self.final_norm is None:
            self.final_norm = self.norm_position == "pre"


class Block(nn.Module):
    """One Transformer block ``T_l`` (4.2): attention then MLP, each with a residual and a norm.

    forward(x ``(B, n, d_model)``, mask, bias) -> ``(B, n, d_model)``; mask/bias are passed
    to the attention (boolean ``True`` = may attend; additive scores).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.pre = cfg.norm_position == "pre"
        self.norm1 = make_norm(cfg.norm, cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, bias=cfg.bias, dropout=cfg.dropout,
                                       fast=cfg.fast)
        self.norm2 = make_norm(cfg.norm, cfg.d_model)
        self.mlp = FeedForward(cfg.d_model, cfg.d_mlp, cfg.activation, cfg.dropout, cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre:                                                        # (4.4)-(4.5)
            y = x + self.dropout(self.attn(self.norm1(x), mask=mask, bias=bias))
            return y + self.mlp(self.norm2(y))
        y = self.norm1(x + self.dropout(self.attn(x, mask=mask, bias=bias)))  # Table 2, post-LN
        return self.norm2(y + self.mlp(y))


class Transformer(nn.Module):
    """A stack of blocks (4.3) plus the final norm (4.6) of a pre-LN model.

    forward(x ``(B, n, d_model)``, mask, bias) -> ``(B, n, d_model)``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, cfg.d_model) if cfg.final_norm else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask=mask, bias=bias)
        return self.norm(x)


class TokenPositionEmbedding(nn.Module):
    """Token embedding plus absolute positions: ``"learned"``, ``"sinusoidal"`` or ``"none"``.

    ids ``(B, n)`` with ``n <= max_len`` -> ``(B, n, d_model)``.
    """

    def __init__(self, vocab_size: int, d_model: int, max_len: int, positions: str = "learned",
                 dropout: float = 0.0):
        super().__init__()
        if positions not in ("learned", "sinusoidal", "none"):
            raise ValueError(f"positions must be 'learned', 'sinusoidal' or 'none', got {positions!r}")
        self.vocab_size, self.max_len, self.positions = vocab_size, max_len, positions
        self.tok = nn.Embedding(vocab_size, d_model)
        if positions == "learned":
            self.pos = nn.Embedding(max_len, d_model)
        elif positions == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, dtype=torch.float32))
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"token ids must have shape (B, n), got {tuple(ids.shape)}")
        n = ids.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.max_len}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}")
        x = self.tok(ids)
        if self.positions == "learned":
            x = x + self.pos(torch.arange(n, device=ids.device))
        elif self.positions == "sinusoidal":
            x = x + self.pe[:n]
        return self.dropout(x)


class DecoderLM(nn.Module):
    """A causal decoder-only language model: embeddings, masked blocks, final LN, bias-free head.

    forward(ids ``(B, n)``) -> logits ``(B, n, vocab_size)``; position t sees tokens 0..t.
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, max_len: int, positions: str = "learned"):
        super().__init__()
        self.cfg, self.max_len = cfg, max_len
        self.embed = TokenPositionEmbedding(vocab_size, cfg.d_model, max_len, positions, cfg.dropout)
        self.transformer = Transformer(cfg)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.register_buffer("causal", causal_mask(max_len), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[-1]
        x = self.transformer(self.embed(ids), mask=self.causal[:n, :n])
        return self.head(x)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, n_new: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``n_new`` sampled tokens to ``ids`` ``(B, n)``; the context is cut to max_len."""
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        was_training = self.training
        self.eval()
        for _ in range(n_new):
            logits = self(ids[:, -self.max_len:])[:, -1] / temperature
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
        self.train(was_training)
        return ids


class EncoderClassifier(nn.Module):
    """An encoder-only classifier: embeddings, unmasked blocks, mean over valid tokens, linear head.

    forward(ids ``(B, n)``, lengths ``(B,)`` or None) -> logits ``(B, n_classes)``. Padding
    positions (index >= length) are hidden from attention and from the mean.
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, max_len: int, n_classes: int,
                 positions: str = "learned"):
        super().__init__()
        self.cfg = cfg
        self.embed = TokenPositionEmbedding(vocab_size, cfg.d_model, max_len, positions, cfg.dropout)
        self.transformer = Transformer(cfg)
        self.head = nn.Linear(cfg.d_model, n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        n = ids.shape[1]
        mask = None if lengths is None else padding_mask(lengths, n)
        x = self.transformer(self.embed(ids), mask=mask)
        if lengths is None:
            pooled = x.mean(1)
        else:
            valid = (torch.arange(n, device=ids.device)[None, :] < lengths[:, None]).to(x.dtype)
            pooled = (x * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
        return self.head(pooled)


@torch.no_grad()
def attention_maps(model: nn.Module, *inputs, **kwargs) -> list[torch.Tensor]:
    """Run ``model(*inputs)`` once and return each attention layer's probabilities ``(B, H, n, m)``.

    Every :class:`MultiHeadAttention` inside the model records its weights during the call
    (the explicit path is used even where ``fast=True``); the flags are restored afterwards.
    """
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError("the model contains no MultiHeadAttention layer")
    was_training = model.training
    model.eval()
    for m in layers:
        m.keep_weights = True
    try:
        model(*inputs, **kwargs)
        return [m.weights for m in layers]
    finally:
        for m in layers:
            m.keep_weights, m.weights = False, None
        model.train(was_training)

