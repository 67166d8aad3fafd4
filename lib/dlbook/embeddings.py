"""Token embeddings, skip-gram with negative sampling, sinusoidal positional encoding.

* One-hot lookup: a token id t in a vocabulary of size V is the one-hot row
  ``x = e_t`` (shape (V,)), and its embedding is ``x E = E[t]`` for an embedding matrix
  ``E`` of shape (V, d).
* Skip-gram with negative sampling (Mikolov et al., 2013): for a centre word c, a
  context word o seen within the window and k noise words n_1..n_k drawn from the
  unigram distribution raised to the power 3/4,

      loss = -log sigma(u_o . v_c) - sum_j log sigma(-u_{n_j} . v_c),

  where v (input) and u (output) are two embedding tables of shape (V, d).
* Sinusoidal positional encoding (Vaswani et al., 2017), for position p and i < d/2,

      PE[p, 2i] = sin(p w_i),  PE[p, 2i+1] = cos(p w_i),  w_i = base^(-2i/d),

  and for every shift k a block-diagonal rotation M_k with PE[p+k] = M_k PE[p].
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterator, Sequence

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["one_hot", "embed_one_hot", "sinusoidal_encoding", "shift_matrix", "Vocabulary",
           "subsample", "skipgram_pairs", "PairBatches", "SkipGram", "NegativeSamplingLoss",
           "noise_distribution", "nearest_neighbours"]


def _check_ids(ids: torch.Tensor, vocab_size: int) -> None:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a tensor, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")


def one_hot(ids: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot rows: ids of shape (...) -> tensor (..., vocab_size) with x[..., ids] = 1."""
    _check_ids(ids, vocab_size)
    return F.one_hot(ids.long(), vocab_size).to(dtype)


def embed_one_hot(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Embeddings as a matrix product: one_hot(ids) @ E, ids (...) and E (V, d) -> (..., d)."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be (V, d), got shape {tuple(weight.shape)}")
    return one_hot(ids, weight.shape[0], weight.dtype) @ weight


def _frequencies(n_positions: int, d_model: int, base: float) -> torch.Tensor:
    if not isinstance(n_positions, int) or n_positions < 1:
        raise ValueError(f"n_positions must be a positive int, got {n_positions!r}")
    if not isinstance(d_model, int) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even int >= 2, got {d_model!r}")
    if base <= 1:
        raise ValueError("base must be > 1")
    i = torch.arange(d_model // 2, dtype=torch.float64)
    return base ** (-2 * i / d_model)                                   # w_i, shape (d/2,)


def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10000.0,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """PE of shape (n_positions, d_model): PE[p,2i] = sin(p w_i), PE[p,2i+1] = cos(p w_i)."""
    w = _frequencies(n_positions, d_model, base)
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * w[None, :]   # (n, d/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(n_positions, d_model)
    return pe.to(dtype)


def shift_matrix(k: int | float, d_model: int, base: float = 10000.0,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """M_k of shape (d_model, d_model), block diagonal with 2x2 blocks
    [[cos k w_i, sin k w_i], [-sin k w_i, cos k w_i]], so that PE[p + k] = M_k PE[p]
    for every position p (column-vector convention)."""
    w = _frequencies(1, d_model, base)
    c, s = torch.cos(k * w), torch.sin(k * w)
    blocks = [torch.tensor([[ci, si], [-si, ci]], dtype=torch.float64) for ci, si in zip(c, s)]
    return torch.block_diag(*blocks).to(dtype)


class Vocabulary:
    """Words kept (count >= min_count), most frequent first; others map to ``unk``."""

    def __init__(self, tokens: Sequence[str], min_count: int = 1, unk: str = "<unk>"):
        if min_count < 1:
            raise ValueError("min_count must be >= 1")
        counts = Counter(tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_count and w != unk),
                      key=lambda w: (-counts[w], w))
        self.unk = unk
        self.itos: list[str] = kept + [unk]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.counts = torch.tensor([counts[w] for w in kept]
                                   + [sum(c for w, c in counts.items() if w not in self.stoi or w == unk)],
                                   dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """Ids (int64, shape (n,)) of ``tokens``; unknown words get the id of ``unk``."""
        u = self.stoi[self.unk]
        return torch.tensor([self.stoi.get(t, u) for t in tokens], dtype=torch.int64)


def subsample(ids: torch.Tensor, counts: torch.Tensor, t: float = 1e-4,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Mikolov's sub-sampling of frequent words: keep a token of relative frequency f with
    probability min(1, sqrt(t / f)). ids (n,) -> ids (m,), m <= n."""
    f = counts / counts.sum()
    keep = torch.clamp(torch.sqrt(t / f), max=1.0)
    u = torch.rand(ids.shape[0], generator=generator, dtype=torch.float64)
    return ids[u < keep[ids]]


def skipgram_pairs(ids: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (centre, context) pairs at distance 1..window: ids (n,) -> two (m,) tensors."""
    if window < 1:
        raise ValueError("window must be >= 1")
    centres, contexts = [], []
    for k in range(1, window + 1):
        centres += [ids[:-k], ids[k:]]
        contexts += [ids[k:], ids[:-k]]
    return torch.cat(centres), torch.cat(contexts)


class PairBatches:
    """Shuffled mini-batches (x[b], y[b]) of in-memory tensors, without a DataLoader
    (one random permutation per pass; fast for millions of rows)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 generator: torch.Generator | None = None):
        if x.shape[0] != y.shape[0]:
            raise ValueError("x and y must have the same number of rows")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(self.x.shape[0], generator=self.generator)
        for i in range(0, len(perm), self.batch_size):
            b = perm[i:i + self.batch_size]
            yield self.x[b], self.y[b]


class SkipGram(nn.Module):
    """Two embedding tables, input v (V, d) and output u (V, d); forward returns v[c]."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.inp = nn.Embedding(vocab_size, dim)
        self.out = nn.Embedding(vocab_size, dim)
        nn.init.uniform_(self.inp.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.out.weight)

    def forward(self, centre: torch.Tensor) -> torch.Tensor:
        """centre ids (B,) -> input vectors v_c (B, d)."""
        _check_ids(centre, self.vocab_size)
        return self.inp(centre)


def noise_distribution(counts: torch.Tensor, power: float = 0.75) -> torch.Tensor:
    """P_n(w) proportional to count(w)^power, shape (V,)."""
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    p = counts.double() ** power
    return (p / p.sum()).float()


class NegativeSamplingLoss:
    """loss(v_c, o) = mean over the batch of -log sigma(u_o.v_c) - sum_j log sigma(-u_nj.v_c),
    with k noise words n_j ~ P_n per pair; v_c (B, d), o (B,) -> scalar."""

    def __init__(self, model: SkipGram, noise: torch.Tensor, k: int = 5,
                 generator: torch.Generator | None = None):
        if k < 1:
            raise ValueError("k must be >= 1")
        if noise.shape != (model.vocab_size,):
            raise ValueError("noise must have one probability per word")
        self.model, self.noise, self.k, self.generator = model, noise, k, generator

    def __call__(self, v: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        u_o = self.model.out(context)                                     # (B, d)
        neg = torch.multinomial(self.noise, v.shape[0] * self.k, replacement=True,
                                generator=self.generator).view(v.shape[0], self.k).to(v.device)
        u_n = self.model.out(neg)                                         # (B, k, d)
        pos = F.logsigmoid((u_o * v).sum(-1))                             # (B,)
        negs = F.logsigmoid(-(u_n @ v.unsqueeze(-1)).squeeze(-1)).sum(-1)  # (B,)
        return -(pos + negs).mean()


def nearest_neighbours(weight: torch.Tensor, query: int, k: int = 5) -> list[tuple[int, float]]:
    """The k rows of ``weight`` (V, d) most cosine-similar to row ``query`` (itself excluded),
    as (id, cosine) pairs, best first."""
    if not 0 <= query < weight.shape[0]:
        raise ValueError("query id out of range")
    w = F.normalize(weight.detach().float(), dim=1)
    sims = w @ w[query]
    sims[query] = -float("inf")
    top = torch.topk(sims, k)
    return [(int(i), float(s)) for s, i in zip(top.values, top.indices)]
