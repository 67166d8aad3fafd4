"""Recurrent networks from scratch: Elman RNN, LSTM and GRU cells, long-lag tasks and
the pieces of a character language model (chapter 7).

Conventions: row vectors, as in the rest of the book. A batch of sequences is a tensor
``x`` of shape ``(B, T, D)`` (batch first), hidden states have shape ``(B, H)``, and the
weights act on the right: ``x_t @ W_xh`` with ``W_xh`` of shape ``(D, H)``. PyTorch stores
``weight_ih_l0`` of shape ``(G*H, D)``, i.e. the transpose; :func:`torch_weights` converts.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

__all__ = ["elman_rnn", "lstm", "gru", "torch_weights", "power_norms", "adding_problem",
           "CharVocab", "batchify", "tbptt_windows", "LockedDropout", "CharLSTM"]


def _check_seq(x: torch.Tensor, W_x: torch.Tensor, W_h: torch.Tensor, gates: int) -> tuple[int, int, int, int]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, D), got {tuple(x.shape)}")
    B, T, D = x.shape
    if W_h.dim() != 2 or W_h.shape[1] % gates or W_h.shape[0] * gates != W_h.shape[1]:
        raise ValueError(f"W_h must have shape (H, {gates}H), got {tuple(W_h.shape)}")
    H = W_h.shape[0]
    if W_x.shape != (D, gates * H):
        raise ValueError(f"W_x must have shape ({D}, {gates * H}), got {tuple(W_x.shape)}")
    return B, T, D, H


def _state(h0: torch.Tensor | None, B: int, H: int, like: torch.Tensor, name: str) -> torch.Tensor:
    if h0 is None:
        return like.new_zeros(B, H)
    if h0.shape != (B, H):
        raise ValueError(f"{name} must have shape ({B}, {H}), got {tuple(h0.shape)}")
    return h0


def elman_rnn(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b: torch.Tensor,
              h0: torch.Tensor | None = None) -> torch.Tensor:
    """Elman recurrence ``h_t = tanh(x_t W_xh + h_{t-1} W_hh + b)``.

    Shapes: x (B, T, D), W_xh (D, H), W_hh (H, H), b (H,), h0 (B, H) or None (zeros).
    Returns all hidden states, shape (B, T, H). ``b`` is PyTorch's ``b_ih + b_hh``.
    """
    B, T, _, H = _check_seq(x, W_xh, W_hh, 1)
    if b.shape != (H,):
        raise ValueError(f"b must have shape ({H},), got {tuple(b.shape)}")
    h = _state(h0, B, H, x, "h0")
    xw = x @ W_xh + b                       # input projections of all steps at once
    out = []
    for t in range(T):
        h = torch.tanh(xw[:, t] + h @ W_hh)
        out.append(h)
    return torch.stack(out, dim=1)


def lstm(x: torch.Tensor, W_x: torch.Tensor, W_h: torch.Tensor, b: torch.Tensor,
         h0: torch.Tensor | None = None, c0: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """LSTM with gates in PyTorch's order (input i, forget f, candidate g, output o).

    ``[i f g o] = x_t W_x + h_{t-1} W_h + b``;  ``i, f, o = sigmoid(.)``, ``g = tanh(.)``;
    ``c_t = f * c_{t-1} + i * g``;  ``h_t = o * tanh(c_t)``.
    Shapes: x (B, T, D), W_x (D, 4H), W_h (H, 4H), b (4H,), h0, c0 (B, H) or None.
    Returns (all h_t of shape (B, T, H), (h_T, c_T)).
    """
    B, T, _, H = _check_seq(x, W_x, W_h, 4)
    if b.shape != (4 * H,):
        raise ValueError(f"b must have shape ({4 * H},), got {tuple(b.shape)}")
    h, c = _state(h0, B, H, x, "h0"), _state(c0, B, H, x, "c0")
    xw = x @ W_x + b
    out = []
    for t in range(T):
        i, f, g, o = (xw[:, t] + h @ W_h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out, dim=1), (h, c)


def gru(x: torch.Tensor, W_x: torch.Tensor, W_h: torch.Tensor, b_x: torch.Tensor, b_h: torch.Tensor,
        h0: torch.Tensor | None = None) -> torch.Tensor:
    """GRU in PyTorch's convention (gate order reset r, update z, candidate n).

    ``r = sigmoid(x W_xr + b_xr + h W_hr + b_hr)``, ``z`` likewise,
    ``n = tanh(x W_xn + b_xn + r * (h W_hn + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.
    Shapes: x (B, T, D), W_x (D, 3H), W_h (H, 3H), b_x, b_h (3H,). Returns (B, T, H).
    """
    B, T, _, H = _check_seq(x, W_x, W_h, 3)
    for name, v in (("b_x", b_x), ("b_h", b_h)):
        if v.shape != (3 * H,):
            raise ValueError(f"{name} must have shape ({3 * H},), got {tuple(v.shape)}")
    h = _state(h0, B, H, x, "h0")
    xw = x @ W_x + b_x
    out = []
    for t in range(T):
        xr, xz, xn = xw[:, t].chunk(3, dim=1)
        hr, hz, hn = (h @ W_h + b_h).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out, dim=1)


def torch_weights(module: nn.RNNBase) -> dict[str, torch.Tensor]:
    """Layer-0 weights of ``nn.RNN``/``nn.LSTM``/``nn.GRU`` in the book's row convention.

    Returns ``W_x`` (D, G*H), ``W_h`` (H, G*H), ``b_x``, ``b_h`` (G*H,) and ``b = b_x + b_h``,
    sharing storage with the module's parameters (gradients flow back to them).
    """
    if not isinstance(module, nn.RNNBase):
        raise TypeError(f"expected nn.RNN, nn.LSTM or nn.GRU, got {type(module).__name__}")
    if not module.bias:
        raise ValueError("the module must have biases (bias=True)")
    W_x, W_h = module.weight_ih_l0.T, module.weight_hh_l0.T
    b_x, b_h = module.bias_ih_l0, module.bias_hh_l0
    return {"W_x": W_x, "W_h": W_h, "b_x": b_x, "b_h": b_h, "b": b_x + b_h}


def power_norms(W: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Spectral norms ``||W^k||_2`` for k = 0..max_lag: ``||dh_T/dh_{T-k}||`` of ``h_t = h_{t-1} W``.

    Shapes: W (H, H). Returns a tensor of shape (max_lag + 1,).
    """
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square, got {tuple(W.shape)}")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    P = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    norms = [torch.linalg.matrix_norm(P, 2)]
    for _ in range(max_lag):
        P = P @ W
        norms.append(torch.linalg.matrix_norm(P, 2))
    return torch.stack(norms)


def adding_problem(n: int, T: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem of Hochreiter & Schmidhuber (1997).

    Each sequence has T steps of two features: a value uniform in [0, 1) and a marker that
    is 1 at exactly two positions (one in the first half, one in the second), 0 elsewhere.
    The target is the sum of the two marked values. Returns x (n, T, 2) and y (n,).
    Predicting the constant 1 gives a mean squared error of about 1/6.
    """
    if n < 1 or T < 2:
        raise ValueError(f"need n >= 1 and T >= 2, got n={n}, T={T}")
    values = torch.rand(n, T, generator=generator)
    first = torch.randint(0, T // 2, (n,), generator=generator)
    second = torch.randint(T // 2, T, (n,), generator=generator)
    marks = torch.zeros(n, T)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return torch.stack([values, marks], dim=2), y


class CharVocab:
    """Character vocabulary: ``encode`` a string to a LongTensor of ids and ``decode`` back."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty string")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D id stream into ``batch_size`` contiguous rows: shape (batch_size, L).

    Row b continues where row b left off in the next window, so hidden states can be
    carried from one window to the next (truncated BPTT). The remainder is dropped.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    L = len(ids) // batch_size
    if batch_size < 1 or L < 2:
        raise ValueError(f"cannot cut {len(ids)} ids into {batch_size} rows of length >= 2")
    return ids[: L * batch_size].view(batch_size, L)


def tbptt_windows(rows: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive windows (inputs, next-character targets), each of shape (B, <= bptt)."""
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    L = rows.shape[1]
    for s in range(0, L - 1, bptt):
        n = min(bptt, L - 1 - s)
        yield rows[:, s:s + n], rows[:, s + 1:s + 1 + n]


class LockedDropout(nn.Module):
    """Variational (locked) dropout: one mask per sequence, the same at every time step.

    Input (B, T, F); the mask has shape (B, 1, F) and is rescaled by 1 / (1 - p).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class CharLSTM(nn.Module):
    """Character language model: embedding, one-layer ``nn.LSTM``, linear read-out.

    AWD-LSTM-style regularisation (Merity et al., 2017): ``weight_drop`` applies
    DropConnect to the hidden-to-hidden matrix (one mask per forward call, i.e. per
    window), ``dropout`` applies locked dropout to the embeddings and the LSTM outputs.
    Input ids (B, T); returns logits (B, T, V) and the new state (h, c).
    """

    def __init__(self, vocab: int, embed: int = 32, hidden: int = 128,
                 dropout: float = 0.0, weight_drop: float = 0.0):
        super().__init__()
        if not 0 <= weight_drop < 1:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop}")
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.drop = LockedDropout(dropout)
        self.weight_drop = weight_drop
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, state=None):
        x = self.drop(self.embed(ids))
        if self.training and self.weight_drop > 0:
            params = dict(self.lstm.named_parameters())
            params["weight_hh_l0"] = nn.functional.dropout(params["weight_hh_l0"], self.weight_drop)
            out, state = torch.func.functional_call(self.lstm, params, (x, state))
        else:
            out, state = self.lstm(x, state)
        return self.head(self.drop(out)), state


def bits_per_char(nll_nats: float) -> float:
    """Convert a mean negative log-likelihood in nats per character to bits per character."""
    return nll_nats / math.log(2)
