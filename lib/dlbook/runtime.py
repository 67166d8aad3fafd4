"""Profiles, devices and seeds: what every notebook sets up before its first experiment.

A notebook's ``parameters`` cell reads the profile and the device from the
environment variables ``DLBOOK_PROFILE`` and ``DLBOOK_DEVICE`` (the book's
single mechanism: the runner and the nbval tests set them, papermill may also
inject ``-p profile quick``), then calls :func:`start`, which validates them,
seeds every random number generator and picks the device. :func:`time_call`
measures how long a function takes, the same way in every chapter.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

PROFILES: tuple[str, ...] = ("quick", "full")
"""``quick``: CI smoke run, seconds per notebook. ``full``: the published results."""

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

PROFILE_ENV = "DLBOOK_PROFILE"
DEVICE_ENV = "DLBOOK_DEVICE"
THREADS_ENV = "DLBOOK_THREADS"

T = TypeVar("T")


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise ``ValueError``."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return profile


def default_profile() -> str:
    """The profile named by ``DLBOOK_PROFILE``, ``full`` when it is unset."""
    return check_profile(os.environ.get(PROFILE_ENV, "full"))


def default_device() -> str:
    """The device named by ``DLBOOK_DEVICE``, ``auto`` when it is unset."""
    return os.environ.get(DEVICE_ENV, "auto")


def choose_device(name: str = "auto"):
    """Return a ``torch.device``: ``auto`` picks cuda, then mps, then cpu.

    Asking explicitly for a device that is not present raises ``ValueError``
    rather than silently running somewhere else.
    """
    import torch

    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}: expected one of {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    elif name == "cuda" and not cuda:
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    elif name == "mps" and not mps:
        raise ValueError("device 'mps' was asked for but the MPS backend is not available")
    return torch.device(name)


def set_threads_from_env() -> int | None:
    """Apply ``DLBOOK_THREADS`` (torch's CPU threads) if set; return the number applied.

    The test suite runs two notebooks at once on two cores and sets it to 1, so
    that the kernels do not oversubscribe the cores; readers normally leave it unset.
    """
    value = os.environ.get(THREADS_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    import torch

    torch.set_num_threads(int(value))
    return int(value)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # chapters without torch still get reproducible numpy
        return
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass(frozen=True)
class Run:
    """What :func:`start` decided: the profile, the device and the seed."""

    profile: str
    device: object  # torch.device, or the string "cpu" for notebooks without torch
    seed: int

    @property
    def full(self) -> bool:
        return self.profile == "full"

    def size(self, value: T | None = None, *, quick: T, full: T) -> T:
        """``value`` if the notebook's parameters set it, else the profile's default.

        >>> Run("quick", "cpu", 0).size(None, quick=3, full=50)
        3
        """
        if value is not None:
            return value
        return full if self.full else quick

    def __str__(self) -> str:
        return f"profile={self.profile} device={self.device} seed={self.seed}"


def full_float32() -> None:
    """Compute float32 matrix products and convolutions in full float32 on CUDA (no TF32)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def start(profile: str | None = None, device: str | None = None, seed: int = 0,
          *, torch: bool = True) -> Run:
    """Validate the parameters, seed everything, apply ``DLBOOK_THREADS``, choose the device.

    ``torch=False`` is for notebooks that never import torch (device is then "cpu").

    TensorFloat-32 is switched off for matrix products and convolutions: on an Ampere or
    newer GPU (Colab's) PyTorch would otherwise compute float32 convolutions with a
    10-bit mantissa, and the book's float32 reference checks, written for full float32
    arithmetic, would not hold on the GPU as they do on the CPU.
    """
    profile = check_profile(default_profile() if profile is None else profile)
    device = default_device() if device is None else device
    seed_everything(seed)
    if torch:
        set_threads_from_env()
        full_float32()
    dev = choose_device(device) if torch else "cpu"
    return Run(profile=profile, device=dev, seed=seed)


TIME_REDUCTIONS = ("min", "median", "mean")


def time_call(fn: Callable[[], object], repeats: int = 5, *, warmup: int = 1,
              reduce: str = "min") -> float:
    """Seconds one call of ``fn()`` takes: ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``reduce`` summarises the timed calls: ``"min"`` (the call least disturbed by other
    work on the machine), ``"median"`` or ``"mean"``. GPU kernels run asynchronously, so
    when CUDA is in use the device is synchronised before and after every timed call;
    otherwise the clock would stop before the work is done.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    if reduce not in TIME_REDUCTIONS:
        raise ValueError(f"reduce must be one of {TIME_REDUCTIONS}, got {reduce!r}")
    try:
        import torch
        sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    except ImportError:                       # notebooks without torch
        sync = lambda: None                   # noqa: E731
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"min": min, "median": statistics.median, "mean": statistics.fmean}[reduce](times)
