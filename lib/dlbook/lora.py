"""Low-rank adaptation (LoRA) and low-rank compression of linear layers.

A linear layer computes ``y = x W^T + b`` with ``W`` of shape ``(d_out, d_in)`` (PyTorch's
convention). LoRA {Hu et al. 2021} freezes ``W`` and learns a low-rank correction:

    y = x W^T + b + (α / r) x A^T B^T,     A: (r, d_in),  B: (d_out, r),

i.e. the effective weight is ``W + (α/r) B A``, a change of rank at most ``r``. ``A`` starts
random (uniform in ``±1/sqrt(d_in)``, the Kaiming-uniform rule of ``nn.Linear`` and of the
reference code) and ``B`` starts at zero, so that the adapted model equals the pretrained
one before training. Only ``r (d_in + d_out)`` numbers are trained per layer instead of
``d_in d_out``, and after training ``B A`` can be merged back into ``W`` (no extra cost at
inference).

Truncated SVD gives the best rank-``r`` approximation of a trained ``W`` in the 2- and
Frobenius norms (Eckart-Young): with ``W = U Σ V^T``,

    W_r = U_r Σ_r V_r^T,

which :class:`LowRankLinear` stores as two thin layers ``x -> x (Σ_r V_r^T)^T`` then
``-> · U_r^T + b`` (``r (d_in + d_out) + d_out`` parameters).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def _check_rank(rank: int, d_in: int, d_out: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be an int, got {type(rank).__name__}")
    if rank <= 0 or rank > min(d_in, d_out):
        raise ValueError(f"rank must lie in 1..min(d_in, d_out) = 1..{min(d_in, d_out)} "
                         f"for a layer of shape (d_out={d_out}, d_in={d_in}), got {rank}")


def _check_linear(layer: nn.Module) -> None:
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"expected an nn.Linear, got {type(layer).__name__}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus the trainable low-rank update ``(α/r) B A``.

    forward(x ``(..., d_in)``) -> ``(..., d_out)`` = ``base(x) + (α/r) (x A^T) B^T``.
    ``alpha`` defaults to ``rank`` (scaling 1). ``A`` is initialised like a linear layer
    (Kaiming-uniform, as in the reference implementation) and ``B`` at zero.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        _check_linear(base)
        d_out, d_in = base.weight.shape
        _check_rank(rank, d_in, d_out)
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank
        w = base.weight
        bound = 1.0 / math.sqrt(d_in)           # kaiming_uniform_(a=sqrt(5)) on (r, d_in)
        a = (torch.rand(rank, d_in, generator=generator, dtype=w.dtype) * 2 - 1) * bound
        self.A = nn.Parameter(a.to(w.device))
        self.B = nn.Parameter(torch.zeros(d_out, rank, dtype=w.dtype, device=w.device))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update ``(α/r) B A`` of shape ``(d_out, d_in)``."""
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * ((x @ self.A.T) @ self.B.T)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + (α/r) B A`` and the same bias."""
        w = self.base.weight
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=w.device, dtype=w.dtype)
        out.weight.copy_(w + self.delta_weight())
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, alpha={self.alpha}")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model: nn.Module, targets: Iterable[str], rank: int, alpha: float | None = None,
                generator: torch.Generator | None = None) -> list[str]:
    """Replace, in place, every ``nn.Linear`` whose qualified name equals or ends with one of
    ``targets`` (e.g. ``["attn.q", "attn.v"]`` or ``["fc1"]``) by a :class:`LoRALinear`.

    Returns the replaced names. Raises ``ValueError`` if nothing matches. The rest of the
    model is left as it is: call :func:`freeze_except` to train only the adapters.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError("targets must name at least one layer")
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and _matches(n, targets)]
    if not names:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"no nn.Linear matches {targets}; the model's linear layers are {linear}")
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), rank, alpha, generator))
    return names


def freeze_except(model: nn.Module, trainable: Iterable[str] = ()) -> None:
    """Freeze every parameter except the LoRA factors ``A``, ``B`` and the parameters whose
    qualified name starts with one of ``trainable`` (e.g. a new classification head)."""
    trainable = tuple(trainable)
    for name, p in model.named_parameters():
        is_lora = name.endswith(".A") or name.endswith(".B")
        p.requires_grad_(is_lora or any(name == t or name.startswith(t + ".") for t in trainable))


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace, in place, every :class:`LoRALinear` by its merged ``nn.Linear``; return model."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("the model contains no LoRALinear layer")
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).merged())
    return model


class LowRankLinear(nn.Module):
    """The rank-``r`` truncated SVD of an ``nn.Linear``: ``x -> (x V_r Σ_r) U_r^T + b``.

    forward(x ``(..., d_in)``) -> ``(..., d_out)``. ``down`` holds ``Σ_r V_r^T`` ``(r, d_in)``
    and ``up`` holds ``U_r`` ``(d_out, r)`` and the bias.
    """

    def __init__(self, layer: nn.Linear, rank: int):
        super().__init__()
        _check_linear(layer)
        d_out, d_in = layer.weight.shape
        _check_rank(rank, d_in, d_out)
        self.rank = rank
        w = layer.weight.detach()
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        self.down = nn.Linear(d_in, rank, bias=False, device=w.device, dtype=w.dtype)
        self.up = nn.Linear(rank, d_out, bias=layer.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.down.weight.copy_((s[:rank, None] * vh[:rank]).to(w.dtype))
            self.up.weight.copy_(u[:, :rank].to(w.dtype))
            if layer.bias is not None:
                self.up.bias.copy_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def weight(self) -> torch.Tensor:
        """The approximation ``W_r = U_r Σ_r V_r^T`` ``(d_out, d_in)``."""
        return self.up.weight @ self.down.weight

    def extra_repr(self) -> str:
        return f"in_features={self.down.in_features}, out_features={self.up.out_features}, rank={self.rank}"


def low_rank_linear(layer: nn.Linear, rank: int) -> LowRankLinear:
    """The best rank-``rank`` replacement of ``layer`` (truncated SVD of its weight)."""
    return LowRankLinear(layer, rank)


def lora_parameters(in_features: int, out_features: int, rank: int) -> int:
    """Trainable numbers of one LoRA adapter: ``r (d_in + d_out)``."""
    _check_rank(rank, in_features, out_features)
    return rank * (in_features + out_features)
