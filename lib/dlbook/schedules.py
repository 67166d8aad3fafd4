"""Stabilising the training of transformers: learning-rate schedules, gradient clipping, loss scaling.

Three tools of chapter 11, each written from its formula and checked against PyTorch.

* Linear warm-up then decay. With ``W`` warm-up steps, ``T`` total steps and a floor
  ``m`` (``min_factor``), the learning rate at step ``s = 0, 1, ...`` is ``η_s = η f(s)``:

      f(s) = (s + 1) / W                                  s < W        (warm-up)
      f(s) = m + (1 - m) (1 + cos(π p)) / 2               cosine decay
      f(s) = m + (1 - m) (1 - p)                          linear decay,   p = (s - W) / (T - W)

  (``p`` clipped to [0, 1], so ``f(W) = 1`` and ``f(s) = m`` for ``s >= T``.)
  :func:`warmup_schedule` returns ``f``; :func:`warmup_lambda_lr` wraps it in a
  ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimisation step.
* Gradient-norm clipping {Pascanu et al. 2013}: with ``g`` all gradients stacked,

      g <- g · min(1, c / (||g||_2 + 1e-6)),

  the rule of ``torch.nn.utils.clip_grad_norm_`` (:func:`clip_grad_norm`).
* Dynamic loss scaling {Micikevicius et al. 2018}: multiply the loss by ``S`` before the
  backward pass so that small float16 gradients do not underflow, divide the gradients by
  ``S`` before the step, skip the step and halve ``S`` when a gradient overflowed to
  inf/NaN, double ``S`` after ``growth_interval`` clean steps (:class:`DynamicLossScaler`,
  the policy of ``torch.amp.GradScaler``).
* The memory of mixed precision: :class:`SavedTensorBytes` adds up the bytes of the
  distinct tensors autograd keeps for the backward pass (the activations, plus any
  16-bit copies of the weights made by autocast), on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from types import TracebackType

import torch

DECAYS = ("cosine", "linear", "constant")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def warmup_schedule(total_steps: int, warmup_steps: int, decay: str = "cosine",
                    min_factor: float = 0.0) -> Callable[[int], float]:
    """The multiplier ``f(s)`` of the base learning rate at step ``s`` (see the module docstring).

    ``warmup_steps`` may be 0 (no warm-up); it must be smaller than ``total_steps``.
    ``decay`` is ``"cosine"``, ``"linear"`` or ``"constant"`` (stay at 1 after the warm-up);
    ``min_factor`` in [0, 1] is the floor reached at ``total_steps``.
    """
    _check_int("total_steps", total_steps, 1)
    _check_int("warmup_steps", warmup_steps, 0)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be smaller than total_steps={total_steps}")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must lie in [0, 1], got {min_factor}")

    def factor(step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "constant":
            return 1.0
        p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        if decay == "cosine":
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * p))
        return min_factor + (1 - min_factor) * (1 - p)

    return factor


def warmup_lambda_lr(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                     decay: str = "cosine", min_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_schedule`; call ``scheduler.step()`` after every
    ``optimizer.step()`` (not once per epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_schedule(total_steps, warmup_steps, decay, min_factor))


def _grads(parameters: Iterable[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The global 2-norm ``sqrt(sum_p ||grad_p||^2)`` of all gradients (a 0-d tensor; 0 if none)."""
    grads = _grads(parameters)
    if not grads:
        return torch.tensor(0.0)
    return torch.sqrt(sum((g.detach().double() ** 2).sum() for g in grads)).float()


def clip_grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float) -> torch.Tensor:
    """Rescale all gradients in place so that their global norm is at most ``max_norm``.

    ``g <- g · min(1, max_norm / (||g|| + 1e-6))`` (the 1e-6 as in
    ``torch.nn.utils.clip_grad_norm_``). Returns the norm *before* clipping. The direction
    of the stacked gradient is unchanged; only its length is capped.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
        raise TypeError(f"max_norm must be a number, got {type(max_norm).__name__}")
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be positive and finite, got {max_norm}")
    parameters = list(parameters) if not isinstance(parameters, torch.Tensor) else [parameters]
    total = grad_norm(parameters)
    coef = min(1.0, max_norm / (float(total) + 1e-6))
    for g in _grads(parameters):
        g.mul_(coef)
    return total


class DynamicLossScaler:
    """Dynamic loss scaling for float16 training, written out step by step.

    Usage per step: ``scaler.scale(loss).backward()``; ``scaler.step(optimizer)`` (unscale
    the gradients, skip the update if any is inf/NaN); ``scaler.update()`` (halve the scale
    after an overflow, double it after ``growth_interval`` consecutive clean steps).
    ``scale`` is the current factor ``S``; ``skipped`` counts the skipped steps.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000):
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        if not growth_factor > 1:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor}")
        if not 0 < backoff_factor < 1:
            raise ValueError(f"backoff_factor must lie in (0, 1), got {backoff_factor}")
        _check_int("growth_interval", growth_interval, 1)
        self.scale_value = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.skipped = 0
        self._found_inf: bool | None = None

    def get_scale(self) -> float:
        return self.scale_value

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``S · loss``: its gradients are ``S`` times the true ones."""
        return loss * self.scale_value

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide every gradient by ``S`` in place; return True if any is inf or NaN."""
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self.scale_value)
                    found = found or not bool(torch.isfinite(p.grad).all())
        self._found_inf = found
        return found

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Unscale (unless already done) and call ``optimizer.step()`` if the gradients are
        finite. Returns True if the step was taken."""
        if self._found_inf is None:
            self.unscale_(optimizer)
        if self._found_inf:
            self.skipped += 1
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        """Adjust ``S`` from the outcome of the last step: back off on overflow, grow after
        ``growth_interval`` clean steps in a row."""
        if self._found_inf is None:
            raise RuntimeError("update() called before step() or unscale_()")
        if self._found_inf:
            self.scale_value *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale_value *= self.growth_factor
                self.good_steps = 0
        self._found_inf = None


class SavedTensorBytes:
    """Context manager: bytes of the distinct tensors autograd saves for the backward pass.

    Every forward operation that needs its inputs or outputs for the gradient hands them
    to autograd; this is the activation memory of training. Inside the ``with`` block each
    saved tensor is recorded once per storage (views and tensors saved by several
    operations are counted once); storages of the tensors in ``exclude`` (typically the
    model's float32 parameters, which exist anyway) are left out. After the block,
    ``.bytes`` holds the total. Unlike ``torch.cuda.max_memory_allocated`` this works the
    same on CPU and GPU, and it does not count temporaries freed during the forward pass.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._sizes: dict[int, int] = {}
        self._hooks = None
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided:
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        else:                                  # sparse: count its values and indices
            key, size = id(t), t.element_size() * t.numel()
        if key not in self._excluded:
            self._sizes[key] = max(self._sizes.get(key, 0), size)
        return t

    def __enter__(self) -> "SavedTensorBytes":
        self._sizes.clear()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._hooks.__exit__(exc_type, exc, tb)
        self.bytes = sum(self._sizes.values())
