"""In-context learning of linear functions (Garg et al. 2022), on a small scale.

Each prompt draws a fresh weight vector ``w ~ N(0, I_d)`` and ``n`` inputs
``x_i ~ N(0, I_d)`` with ``y_i = w · x_i`` (plus optional Gaussian noise). The sequence

    x_1, y_1, x_2, y_2, ..., x_n, y_n                         (2n tokens)

is fed to a causal transformer, which must predict ``y_i`` at the position of ``x_i``,
having seen only the ``i - 1`` earlier pairs of the *same* prompt: it cannot memorise
``w``, it has to infer it from the context. The natural yardstick is least squares on
those ``i - 1`` pairs (the minimum-norm solution when ``i - 1 < d``).

Tokens are vectors of size ``d + 1``: ``(x, 0)`` for an input and ``(0, ..., 0, y)`` for
an output; a linear read-in maps them to ``d_model`` and a linear read-out maps the
transformer's output at each ``x`` token to a scalar prediction. A second layout,
``"pairs"``, puts ``x_j`` and ``y_j`` in one token and asks the queries separately
(see :class:`InContextRegressor`).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import causal_mask
from .transformer import Transformer, TransformerConfig


def sample_linear_prompts(batch: int, n_points: int, d: int, noise: float = 0.0,
                          generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``xs`` ``(batch, n_points, d)``, ``ys`` ``(batch, n_points)``, ``w`` ``(batch, d)``:
    ``ys[b, i] = w[b] · xs[b, i] + noise · ε``, everything standard normal."""
    for name, v in (("batch", batch), ("n_points", n_points), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    w = torch.randn(batch, d, generator=generator)
    xs = torch.randn(batch, n_points, d, generator=generator)
    ys = (xs @ w.unsqueeze(-1)).squeeze(-1)
    if noise > 0:
        ys = ys + noise * torch.randn(batch, n_points, generator=generator)
    return xs, ys, w


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, 2n, d + 1)``: row ``2i`` is ``(x_i, 0)``, row ``2i + 1`` is ``(0, y_i)``."""
    if xs.dim() != 3 or ys.shape != xs.shape[:2]:
        raise ValueError(f"need xs (B, n, d) and ys (B, n), got {tuple(xs.shape)} and {tuple(ys.shape)}")
    b, n, d = xs.shape
    x_tok = torch.cat([xs, xs.new_zeros(b, n, 1)], dim=-1)
    y_tok = torch.cat([xs.new_zeros(b, n, d), ys.unsqueeze(-1)], dim=-1)
    return torch.stack([x_tok, y_tok], dim=2).reshape(b, 2 * n, d + 1)


def pairs_mask(n: int, device=None) -> torch.Tensor:
    """Boolean mask ``(2n, 2n)`` (True = may attend) for the ``"pairs"`` layout.

    Tokens ``0..n-1`` are the pairs ``(x_j, y_j)``, tokens ``n..2n-1`` the queries
    ``(x_i, 0)``. Pair ``j`` sees pairs ``0..j``; query ``i`` sees pairs ``0..i-1`` and itself,
    so the prediction of ``y_i`` never depends on ``y_i`` or on later pairs.
    """
    mask = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=device)
    mask[:n, :n] = causal_mask(n, device=device)
    mask[n:, :n] = torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)
    mask[n:, n:] = torch.eye(n, dtype=torch.bool, device=device)
    return mask


LAYOUTS = ("interleaved", "pairs")


class InContextRegressor(nn.Module):
    """A transformer reading ``(x, y)`` examples and predicting each ``y_i`` from ``x_i`` and
    the ``i`` earlier examples of the same prompt.

    forward(xs ``(B, n, d)``, ys ``(B, n)``) -> predictions ``(B, n)``.

    * ``layout="interleaved"`` (Garg et al.): the causal sequence ``x_1, y_1, ..., x_n, y_n``
      of :func:`interleave` with learned positions; ``y_i`` is read at the token of ``x_i``.
    * ``layout="pairs"``: ``n`` tokens ``(x_j, y_j)`` then ``n`` query tokens ``(x_i, 0)``,
      attention restricted by :func:`pairs_mask`, a learned embedding telling pairs from
      queries and no positions (the order of the examples carries no information);
      ``y_i`` is read at query ``i``. One attention layer can then combine ``x_j`` and
      ``y_j`` directly, which makes the task much quicker to learn.
    """

    def __init__(self, d: int, max_points: int, cfg: TransformerConfig, layout: str = "pairs"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.d, self.max_points, self.layout = d, max_points, layout
        self.read_in = nn.Linear(d + 1, cfg.d_model)
        if layout == "interleaved":
            self.pos = nn.Embedding(2 * max_points, cfg.d_model)
            self.register_buffer("mask", causal_mask(2 * max_points), persistent=False)
        else:
            self.kind = nn.Embedding(2, cfg.d_model)
        self.transformer = Transformer(cfg)
        self.read_out = nn.Linear(cfg.d_model, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if xs.dim() != 3 or ys.shape != xs.shape[:2]:
            raise ValueError(f"need xs (B, n, d) and ys (B, n), got {tuple(xs.shape)} and {tuple(ys.shape)}")
        if xs.shape[-1] != self.d:
            raise ValueError(f"expected inputs of dimension d={self.d}, got {xs.shape[-1]}")
        n = xs.shape[1]
        if n > self.max_points:
            raise ValueError(f"{n} points exceed max_points={self.max_points}")
        if self.layout == "interleaved":
            h = self.read_in(interleave(xs, ys)) + self.pos(torch.arange(2 * n, device=xs.device))
            h = self.transformer(h, mask=self.mask[:2 * n, :2 * n])
            return self.read_out(h[:, ::2]).squeeze(-1)      # outputs at the x tokens
        pairs = torch.cat([xs, ys.unsqueeze(-1)], dim=-1)
        queries = torch.cat([xs, xs.new_zeros(xs.shape[:2] + (1,))], dim=-1)
        kind = torch.cat([xs.new_zeros(n, dtype=torch.long), xs.new_ones(n, dtype=torch.long)])
        h = self.read_in(torch.cat([pairs, queries], dim=1)) + self.kind(kind)
        h = self.transformer(h, mask=pairs_mask(n, device=xs.device))
        return self.read_out(h[:, n:]).squeeze(-1)          # outputs at the queries


def least_squares_predictions(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """For each ``i``, predict ``y_i`` with the minimum-norm least-squares fit on the pairs
    ``0..i-1`` of the same prompt: ``ŷ_i = x_i · pinv(X_{<i}) y_{<i}`` (0 for ``i = 0``).

    xs ``(B, n, d)``, ys ``(B, n)`` -> ``(B, n)``.
    """
    if xs.dim() != 3 or ys.shape != xs.shape[:2]:
        raise ValueError(f"need xs (B, n, d) and ys (B, n), got {tuple(xs.shape)} and {tuple(ys.shape)}")
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, xs.shape[1]):
        w_hat = torch.linalg.pinv(xs[:, :i].double()) @ ys[:, :i, None].double()   # (B, d, 1)
        preds.append((xs[:, i:i + 1].double() @ w_hat).reshape(-1).to(ys.dtype))
    return torch.stack(preds, dim=1)
