"""Cheaper attention for long sequences: sparse masks, random features, projections (chapter 10).

Exact attention ``softmax(Q K^T / sqrt(d)) V`` materialises the ``(n, n)`` score matrix,
``O(n^2)`` time and memory. The variants here cut that cost in three ways.

* **Sparse patterns.** A boolean mask ``M`` (True = may attend) keeps ``O(n w)`` entries:
  the sliding window of Longformer (Beltagy et al., 2020), ``M[i, j] = |i - j| <= w``, and
  BigBird's window + global + random pattern (Zaheer et al., 2020).
  :func:`sliding_window_attention` computes the windowed attention without the ``n x n``
  matrix, from ``(n, 2w + 1)`` scores.
* **Random features (Performer, FAVOR+; Choromanski et al., 2021).** With
  ``q~ = q / d^(1/4)`` and ``w_1..w_m ~ N(0, I_d)``, the positive features

      phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)             (W rows w_r, shape (m, d))

  satisfy ``E[phi(q~) . phi(k~)] = exp(q . k / sqrt(d))``, the softmax kernel, so
  ``softmax(Q K^T / sqrt d) V ~ D^-1 phi(Q~) (phi(K~)^T V)`` with
  ``D = diag(phi(Q~) phi(K~)^T 1)``: ``O(n m d)`` instead of ``O(n^2 d)``.
* **Low-rank projections (Linformer; Wang et al., 2020).** Projections ``E, F`` of shape
  ``(k, n)`` shrink the keys and values to ``k`` rows: ``softmax(Q (E K)^T / sqrt d) (F V)``,
  scores of shape ``(n, k)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["sliding_window_mask", "bigbird_mask", "sliding_window_attention", "random_features",
           "favor_features", "performer_attention", "favor_kernel", "linformer_projection",
           "pooling_projection", "linformer_attention"]


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")


def sliding_window_mask(n: int, window: int, causal: bool = False, device=None) -> torch.Tensor:
    """``(n, n)`` boolean band: ``M[i, j] = |i - j| <= window`` (and ``j <= i`` when causal)."""
    _check_positive(n=n, window=window)
    if n < 1:
        raise ValueError("n must be >= 1")
    i = torch.arange(n, device=device)
    off = i[None, :] - i[:, None]
    mask = off.abs() <= window
    return mask & (off <= 0) if causal else mask


def bigbird_mask(n: int, window: int, n_global: int, n_random: int,
                 generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """BigBird's pattern ``(n, n)``: a band of half-width ``window``, ``n_global`` global tokens
    (the first ones: they attend to all keys and all queries attend to them) and, for every
    other query, ``n_random`` keys drawn uniformly without replacement."""
    _check_positive(window=window, n_global=n_global, n_random=n_random)
    if n_global > n or n_random > n:
        raise ValueError(f"n_global={n_global} and n_random={n_random} must not exceed n={n}")
    mask = sliding_window_mask(n, window)
    mask[:n_global, :] = True
    mask[:, :n_global] = True
    if n_random:
        scores = torch.rand(n, n, generator=generator)
        idx = scores.topk(n_random, dim=-1).indices
        mask.scatter_(1, idx, True)
        mask[:n_global, :] = True
    return mask.to(device) if device is not None else mask


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int
                             ) -> torch.Tensor:
    """Attention restricted to ``|i - j| <= window`` without forming the ``(n, n)`` scores.

    q, k ``(..., n, d)``, v ``(..., n, d_v)`` -> ``(..., n, d_v)``. Keys and values are
    zero-padded by ``window`` on both sides and cut into ``n`` windows of ``2 w + 1``
    rows (``Tensor.unfold``); padded slots are masked. Memory ``O(n w d)``.
    Equal to ``attention(q, k, v, mask=sliding_window_mask(n, window))``.
    """
    _check_positive(window=window)
    if q.shape != k.shape or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"self-attention shapes expected: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    n, w = q.shape[-2], window
    pad = lambda t: F.pad(t, (0, 0, w, w))                              # (..., n + 2w, d)
    kw = pad(k).unfold(-2, 2 * w + 1, 1)                                  # (..., n, d, 2w+1)
    vw = pad(v).unfold(-2, 2 * w + 1, 1)
    scores = (q.unsqueeze(-2) @ kw).squeeze(-2) / math.sqrt(q.shape[-1])  # (..., n, 2w+1)
    pos = torch.arange(n, device=q.device)[:, None] + torch.arange(-w, w + 1, device=q.device)
    valid = (pos >= 0) & (pos < n)
    weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    return (vw @ weights.unsqueeze(-1)).squeeze(-1)


def random_features(n_features: int, d: int, orthogonal: bool = True,
                    generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """The matrix ``W`` ``(m, d)`` of FAVOR+: rows ``~ N(0, I_d)``.

    With ``orthogonal=True`` the rows come in blocks of ``d`` mutually orthogonal vectors
    (QR of a Gaussian matrix), each rescaled to the norm of a Gaussian vector, which keeps
    the marginal law and lowers the variance (Choromanski et al., 2021, §2.4).
    """
    if n_features < 1 or d < 1:
        raise ValueError("n_features and d must be >= 1")
    if not orthogonal:
        return torch.randn(n_features, d, generator=generator, dtype=torch.float64).to(dtype)
    n_blocks = -(-n_features // d)
    g = torch.randn(n_blocks, d, d, generator=generator, dtype=torch.float64)
    qmat, _ = torch.linalg.qr(g)                                        # batched QR
    w = qmat.transpose(-2, -1).reshape(n_blocks * d, d)[:n_features]    # orthonormal rows
    norms = torch.randn(n_features, d, generator=generator, dtype=torch.float64).norm(dim=-1)
    return (w * norms[:, None]).to(dtype)


def favor_features(x: torch.Tensor, w: torch.Tensor, stabilise: str | None = None) -> torch.Tensor:
    """Positive random features ``phi(x) = exp(W x - |x|^2/2) / sqrt(m)``, x ``(..., n, d)`` ->
    ``(..., n, m)``. ``x`` must already be scaled by ``d^(-1/4)``.

    ``stabilise="row"`` subtracts each row's largest exponent (for queries: it cancels in
    the normalisation of that row); ``"all"`` subtracts the largest over all rows (for
    keys: a common factor of every key). ``None`` gives the exact unbiased estimator.
    """
    if w.dim() != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(f"W must have shape (m, d={x.shape[-1]}), got {tuple(w.shape)}")
    proj = x @ w.T - (x * x).sum(-1, keepdim=True) / 2
    if stabilise == "row":
        proj = proj - proj.amax(-1, keepdim=True).detach()
    elif stabilise == "all":
        proj = proj - proj.amax((-2, -1), keepdim=True).detach()
    elif stabilise is not None:
        raise ValueError(f"stabilise must be None, 'row' or 'all', got {stabilise!r}")
    return torch.exp(proj) / math.sqrt(w.shape[0])


def favor_kernel(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The random-feature estimate ``phi(q~) phi(k~)^T`` ``(..., n, m_keys)`` of
    ``exp(Q K^T / sqrt d)`` (unstabilised, unbiased)."""
    s = q.shape[-1] ** -0.25
    return favor_features(q * s, w) @ favor_features(k * s, w).transpose(-2, -1)


def performer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor
                        ) -> torch.Tensor:
    """FAVOR+ attention ``D^-1 phi(Q~) (phi(K~)^T V)`` with the features ``W`` ``(m, d)``.

    q ``(..., n, d)``, k ``(..., m_k, d)``, v ``(..., m_k, d_v)`` -> ``(..., n, d_v)``; time
    and memory ``O((n + m_k) m d)``: no ``n x m_k`` matrix is formed.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries have size {q.shape[-1]} but keys {k.shape[-1]}: d must agree")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2]} values")
    s = q.shape[-1] ** -0.25
    fq = favor_features(q * s, w, stabilise="row")                       # (..., n, m)
    fk = favor_features(k * s, w, stabilise="all")                       # (..., m_k, m)
    num = fq @ (fk.transpose(-2, -1) @ v)                                # (..., n, d_v)
    den = fq @ fk.sum(-2).unsqueeze(-1)                                  # (..., n, 1)
    return num / den


def linformer_projection(k: int, n: int, generator: torch.Generator | None = None,
                         dtype=torch.float32) -> torch.Tensor:
    """A random ``(k, n)`` projection with ``N(0, 1/k)`` entries (Johnson-Lindenstrauss);
    in a trained Linformer ``E`` and ``F`` are parameters initialised like this."""
    if k < 1 or n < 1:
        raise ValueError("k and n must be >= 1")
    return (torch.randn(k, n, generator=generator, dtype=torch.float64) / math.sqrt(k)).to(dtype)


def pooling_projection(k: int, n: int, dtype=torch.float32) -> torch.Tensor:
    """The ``(k, n)`` mean-pooling projection: row ``r`` averages positions
    ``r n/k .. (r+1) n/k - 1`` (one of the fixed projections discussed by Wang et al.);
    ``k`` must divide ``n``. With ``k = n`` it is the identity."""
    if k < 1 or n < 1 or n % k:
        raise ValueError(f"k={k} must be a positive divisor of n={n}")
    return torch.repeat_interleave(torch.eye(k, dtype=dtype), n // k, dim=1) * (k / n)


def linformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                        f: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(Q (E K)^T / sqrt d) (F V)``: q ``(..., n, d)``, k, v ``(..., n, d)``,
    E, F ``(k_proj, n)`` (F defaults to E, the shared projection of the paper) ->
    ``(..., n, d_v)``; the score matrix is ``(n, k_proj)``."""
    f = e if f is None else f
    n = k.shape[-2]
    for name, p in (("E", e), ("F", f)):
        if p.dim() != 2 or p.shape[1] != n:
            raise ValueError(f"{name} must have shape (k_proj, n={n}), got {tuple(p.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2]} values")
    kp, vp = e @ k, f @ v                                                # (..., k_proj, d)
    scores = q @ kp.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ vp
