"""Denoising diffusion (chapter 17): noise schedules, the forward chain, samplers, models.

The *forward chain* of Sohl-Dickstein et al. (2015) and Ho et al. (2020) corrupts a data
point ``x_0`` in ``T`` small Gaussian steps,

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),      t = 1, ..., T,

and, with ``alpha_t = 1 - beta_t`` and ``abar_t = prod_{s <= t} alpha_s``, in one step

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).

A network ``eps_theta(x_t, t)`` learns to predict the noise ``eps`` of
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al.'s ``L_simple``), and the
samplers run the chain backwards from ``x_T ~ N(0, I)``.

Indexing follows ``diffusers``: a schedule of ``T`` steps is stored in tensors of length
``T`` whose entry ``i`` belongs to the step ``t = i + 1`` of the papers, so the
*timestep* ``t`` that the functions take runs over ``0, ..., T - 1`` (``abar[t]`` is the
papers' ``abar_{t+1}``); ``abar = 1`` before the first step is written ``t = -1``.

* Schedules: :func:`linear_schedule` (Ho et al.: ``beta`` from ``1e-4`` to ``0.02``),
  :func:`cosine_schedule` (Nichol & Dhariwal 2021), both :class:`Schedule`.
* The forward chain: :func:`q_sample` (closed form), :func:`simulate_chain` (step by step).
* Training: :func:`loss_simple`, :func:`train` (Adam, a progress bar).
* Sampling with ``S <= T`` steps on the timesteps of :func:`timesteps` ("trailing"
  spacing): :func:`ddpm_sample` (ancestral, on the respaced schedule of Nichol & Dhariwal)
  and :func:`ddim_sample` (Song et al. 2021; ``eta = 0``: deterministic).
* Models: :func:`sinusoidal_embedding`, :class:`EpsMLP` for 2-D points, :class:`UNet`
  (configured by :class:`UNetConfig`) for ``(n, 1, 28, 28)`` images; :func:`score`.
* A metric for 2-D samples: :func:`energy_distance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "Schedule", "linear_schedule", "cosine_schedule", "q_sample", "simulate_chain",
    "timesteps", "loss_simple", "train", "ddpm_sample", "ddim_sample", "score",
    "sinusoidal_embedding", "EpsMLP", "UNetConfig", "UNet", "energy_distance",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- schedules -------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Schedule:
    """A noise schedule: ``betas``, ``alphas = 1 - betas``, ``abar = cumprod(alphas)``.

    All three are float32 tensors of shape ``(T,)``; entry ``t`` belongs to the papers'
    step ``t + 1`` (see the module). ``snr[t] = abar[t] / (1 - abar[t])`` is the
    signal-to-noise ratio of ``x_t``.
    """

    betas: torch.Tensor
    name: str = "custom"

    def __post_init__(self) -> None:
        b = self.betas
        if not isinstance(b, torch.Tensor) or b.ndim != 1 or len(b) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got {getattr(b, 'shape', b)}")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1 - self.betas

    @property
    def abar(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, 0)

    @property
    def snr(self) -> torch.Tensor:
        abar = self.abar
        return abar / (1 - abar)

    def abar_at(self, t: torch.Tensor) -> torch.Tensor:
        """``abar[t]`` for integer timesteps ``t`` in ``[-1, T)``; ``t = -1`` gives 1."""
        t = _timesteps(t, self.T, allow_minus_one=True)
        one = torch.ones(1, dtype=self.betas.dtype, device=self.betas.device)
        return torch.cat([one, self.abar])[t + 1]


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Ho et al.'s schedule: ``beta_t`` linear from ``beta_start`` to ``beta_end``, float32.

    The defaults (``T = 1000``, ``1e-4`` to ``0.02``) are those of the paper and of
    ``diffusers.DDPMScheduler()``, computed the same way (``torch.linspace`` in float32,
    then ``cumprod``), so that ``abar`` equals its ``alphas_cumprod`` bit for bit.
    """
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float32), "linear")


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's schedule: ``abar(t) = f(t) / f(0)``,
    ``f(t) = cos^2(pi/2 (t/T + s) / (1 + s))``.

    ``beta_t = min(1 - abar(t) / abar(t - 1), max_beta)``, computed in float64 and stored
    in float32 like diffusers' ``"squaredcos_cap_v2"``. The cap keeps ``beta_T`` below 1.
    """
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if not s >= 0 or not 0 < max_beta < 1:
        raise ValueError(f"need s >= 0 and 0 < max_beta < 1, got {s}, {max_beta}")

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
    return Schedule(torch.tensor(betas, dtype=torch.float32), "cosine")


def _timesteps(t, T: int, allow_minus_one: bool = False) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"timesteps must be integers, got dtype {t.dtype}")
    low = -1 if allow_minus_one else 0
    if t.numel() and (int(t.min()) < low or int(t.max()) >= T):
        raise ValueError(f"timesteps must lie in [{low}, {T - 1}], got [{int(t.min())}, "
                         f"{int(t.max())}]")
    return t.long()


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(n,)`` -> ``(n, 1, ..., 1)`` broadcastable against ``x`` ``(n, ...)``."""
    return values.to(x.device, x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


# --- the forward chain -----------------------------------------------------------------

def q_sample(x0: torch.Tensor, t: torch.Tensor, schedule: Schedule,
             noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw of ``q(x_t | x_0)``: ``sqrt(abar[t]) x0 + sqrt(1 - abar[t]) noise``.

    ``x0`` ``(n, ...)``, integer timesteps ``t`` ``(n,)`` (or a scalar for all) in
    ``[0, T)``, ``noise`` of ``x0``'s shape (drawn from ``N(0, I)`` when not given).
    Returns ``x_t`` of ``x0``'s shape.
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise TypeError("x0 must be a floating-point tensor (n, ...)")
    t = _timesteps(t, schedule.T)
    if t.ndim == 0:
        t = t.expand(len(x0))
    if t.shape != (len(x0),):
        raise ValueError(f"t must have shape ({len(x0)},), got {tuple(t.shape)}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    abar = _per_sample(schedule.abar.to(x0.device)[t.to(x0.device)], x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def simulate_chain(x0: torch.Tensor, schedule: Schedule, record: Sequence[int],
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the chain step by step: ``x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z_t``.

    Starts from ``x0`` ``(n, ...)`` and returns the states after the timesteps in
    ``record`` (increasing, in ``[0, T)``), stacked as ``(len(record), n, ...)``. It is the
    slow, Markov way to reach what :func:`q_sample` gives in one step.
    """
    record = [int(r) for r in record]
    if not record or record != sorted(set(record)) or record[0] < 0 or record[-1] >= schedule.T:
        raise ValueError(f"record must be increasing timesteps in [0, {schedule.T}), got {record}")
    x, out = x0, []
    for t in range(record[-1] + 1):
        beta = float(schedule.betas[t])
        z = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * z
        if t in record:
            out.append(x)
    return torch.stack(out)


# --- training --------------------------------------------------------------------------

def loss_simple(model: EpsModel, x0: torch.Tensor, schedule: Schedule,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho et al.'s ``L_simple = E_{t, x0, eps} ||eps - eps_theta(x_t, t)||^2``.

    ``t`` uniform on ``{0, ..., T - 1}`` and ``eps ~ N(0, I)``, one each per sample of
    ``x0`` ``(n, ...)``; the squared error is averaged over samples and coordinates
    (a mean, not a sum, as in Ho et al.'s code). Returns a scalar.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2 or len(x0) == 0:
        raise ValueError("x0 must be a non-empty batch (n, ...)")
    t = torch.randint(0, schedule.T, (len(x0),), generator=generator).to(x0.device)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    return F.mse_loss(model(q_sample(x0, t, schedule, eps), t), eps)


def train(model: nn.Module, data: torch.Tensor, schedule: Schedule, steps: int,
          batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
          device: str | torch.device = "cpu", progress: bool = True,
          desc: str = "training") -> list[float]:
    """Adam on :func:`loss_simple` over random mini-batches of ``data`` ``(N, ...)``.

    Each step draws ``batch_size`` rows with replacement, their timesteps and noise
    from one generator seeded by ``seed``; returns the ``steps`` losses. The model is
    left on ``device`` in eval mode.
    """
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive ints, got {steps}, {batch_size}")
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or len(data) == 0:
        raise ValueError("data must be a non-empty tensor (N, ...)")
    model.to(device).train()
    data = data.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        loss = loss_simple(model, data[idx.to(device)], schedule, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --- sampling --------------------------------------------------------------------------

def timesteps(T: int, steps: int) -> torch.Tensor:
    """The ``steps`` timesteps a sampler visits, decreasing, with "trailing" spacing.

    ``round(arange(T, 0, -T/steps)) - 1``, diffusers' ``timestep_spacing="trailing"``:
    the first is ``T - 1`` (the noisiest, where ``x_T ~ N(0, I)`` is closest to right),
    and ``steps = T`` visits every timestep. (diffusers' default "leading" spacing,
    ``arange(steps) * (T // steps)``, would start at ``T - T/steps`` instead and never
    visit ``T - 1``.)
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, T={T}], got {steps!r}")
    ratio = T / steps
    return (torch.arange(T, 0, -ratio, dtype=torch.float64).round() - 1).long()


def _sampler_args(shape, schedule, steps, generator, x_T):
    if x_T is None:
        x_T = torch.randn(tuple(shape), generator=generator)
    if not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T must be a tensor of shape {tuple(shape)}")
    ts = timesteps(schedule.T, steps)
    prev = torch.cat([ts[1:], torch.tensor([-1])])
    return x_T, ts, prev


@torch.no_grad()
def ddpm_sample(model: EpsModel, shape: Sequence[int], schedule: Schedule, steps: int | None = None,
                generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Ancestral sampling (Ho et al., Algorithm 2) in ``steps`` steps (default ``T``).

    With fewer steps than ``T`` it walks the timesteps ``tau`` of :func:`timesteps` on the
    *respaced* schedule of Nichol & Dhariwal: between consecutive visited timesteps
    ``s < t``, ``beta' = 1 - abar_t / abar_s`` (``abar_{-1} = 1``), and

        x_s = (x_t - beta' / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(1 - beta')
              + sigma z,     sigma^2 = (1 - abar_s) / (1 - abar_t) beta',

    the posterior ``q(x_s | x_t, x_0)`` with ``x_0`` predicted (Ho et al.'s
    ``sigma^2 = beta~``, diffusers' "fixed_small"). With ``steps = T`` it is Algorithm 2
    itself. One ``z ~ N(0, I)`` is drawn per step (the last step's has ``sigma = 0``), in
    the order diffusers' ``DDPMScheduler.step`` draws them. Returns ``x_{-1}``, i.e. the
    sample ``x_0`` of the papers, of shape ``shape``.
    """
    x, ts, prev = _sampler_args(shape, schedule, steps or schedule.T, generator, x_T)
    x = x.to(device)
    abar_t, abar_s = schedule.abar_at(ts).tolist(), schedule.abar_at(prev).tolist()
    for t, a_t, a_s in zip(ts.tolist(), abar_t, abar_s):
        eps = model(x, torch.full((len(x),), t, dtype=torch.long, device=device))
        beta = 1 - a_t / a_s
        mean = (x - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(1 - beta)
        sigma = math.sqrt((1 - a_s) / (1 - a_t) * beta)
        z = torch.randn(tuple(shape), generator=generator).to(device)
        x = mean + sigma * z
    return x


@torch.no_grad()
def ddim_sample(model: EpsModel, shape: Sequence[int], schedule: Schedule, steps: int,
                eta: float = 0.0, generator: torch.Generator | None = None,
                x_T: torch.Tensor | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12) on the timesteps of :func:`timesteps`.

    From ``x_t`` to the previous visited timestep ``s`` (``abar_{-1} = 1``):

        x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
        x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z,
        sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s).

    ``eta = 0`` is deterministic (no noise after ``x_T``): an ODE-like map from noise to
    data; ``eta = 1`` has the variance of :func:`ddpm_sample` and, for the same draws,
    the same samples. Returns the sample, of shape ``shape``.
    """
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    x, ts, prev = _sampler_args(shape, schedule, steps, generator, x_T)
    x = x.to(device)
    abar_t, abar_s = schedule.abar_at(ts).tolist(), schedule.abar_at(prev).tolist()
    for t, a_t, a_s in zip(ts.tolist(), abar_t, abar_s):
        eps = model(x, torch.full((len(x),), t, dtype=torch.long, device=device))
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma ** 2, 0.0)) * eps
        if eta > 0:
            x = x + sigma * torch.randn(tuple(shape), generator=generator).to(device)
    return x


@torch.no_grad()
def score(model: EpsModel, x: torch.Tensor, t: int, schedule: Schedule) -> torch.Tensor:
    """The learned score ``s(x, t) = grad_x log q_t(x) ~ -eps_theta(x, t) / sqrt(1 - abar_t)``
    at points ``x`` ``(n, ...)`` for one timestep ``t``; shape of ``x``."""
    t = int(_timesteps(t, schedule.T))
    eps = model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
    return -eps / math.sqrt(1 - float(schedule.abar[t]))


# --- models ----------------------------------------------------------------------------

def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style features of the timesteps ``t`` ``(n,)``: ``(n, dim)``.

    ``[sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})]`` with
    ``w_k = max_period^(-k/h)`` and ``h = dim / 2`` (Vaswani et al.; Ho et al. embed
    ``t`` this way). ``dim`` must be even. These are the frequencies of
    :func:`dlbook.embeddings.sinusoidal_encoding`, evaluated at any batch of (float)
    timesteps and with the sines and cosines side by side instead of interleaved.
    """
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2, got {dim!r}")
    t = torch.as_tensor(t)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (n,), got {tuple(t.shape)}")
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angle = t.float()[:, None] * w[None]
    return torch.cat([angle.sin(), angle.cos()], 1)


class EpsMLP(nn.Module):
    """``eps_theta(x, t)`` for points ``x`` ``(n, dim)``: an MLP on ``[x, emb(t)]``.

    ``emb`` is :func:`sinusoidal_embedding` with ``time_dim`` features; ``depth`` hidden
    layers of ``hidden`` SiLU units; the output ``(n, dim)`` is the predicted noise.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        if min(dim, hidden, depth) < 1:
            raise ValueError(f"dim, hidden and depth must be positive, got {dim}, {hidden}, {depth}")
        self.dim, self.time_dim = dim, time_dim
        sizes = [dim + time_dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        if t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(t.shape)}")
        return self.net(torch.cat([x, sinusoidal_embedding(t, self.time_dim).to(x)], 1))


@dataclass(frozen=True)
class UNetConfig:
    """A small U-Net (Ronneberger et al. 2015) for ``(n, 1, 28, 28)`` images.

    ``channels[k]`` feature maps at resolution ``28 / 2^k`` (two entries: 28 and 14);
    ``time_dim`` features of the timestep embedding; ``groups`` of the group norms.
    """
    channels: tuple[int, ...] = (32, 64)
    time_dim: int = 64
    groups: int = 8
    in_channels: int = 1

    def __post_init__(self) -> None:
        if not self.channels or any(c % self.groups for c in self.channels):
            raise ValueError(f"every channel count must be a multiple of groups={self.groups}, "
                             f"got {self.channels}")
        if self.time_dim % 2:
            raise ValueError(f"time_dim must be even, got {self.time_dim}")


class ResBlock(nn.Module):
    """``h = conv(SiLU(GN(x))) + W emb(t)``, ``out = skip(x) + conv(SiLU(GN(h)))``."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    """``eps_theta(x, t)``: ``(n, C, 28, 28)``, timesteps ``(n,)`` -> ``(n, C, 28, 28)``.

    Encoder: a 3x3 convolution to ``channels[0]`` maps, then per resolution one
    :class:`ResBlock` and a stride-2 convolution that halves the resolution; a middle
    ResBlock; the decoder mirrors the encoder, upsampling (nearest, then a 3x3
    convolution) and concatenating the encoder's maps of the same resolution (the
    *skip connections* that make it a U-Net) before each ResBlock. Every ResBlock
    receives the timestep as an MLP of its sinusoidal embedding.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = c = config
        ch, td, g = c.channels, c.time_dim, c.groups
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = ch[0]
        for k, width in enumerate(ch):
            self.down.append(ResBlock(prev, width, td, g))
            prev = width
            self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1)
                                   if k < len(ch) - 1 else nn.Identity())
        self.mid = ResBlock(prev, prev, td, g)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for k in reversed(range(len(ch))):
            if k < len(ch) - 1:               # Ronneberger's 2x2 "up-convolution"
                self.upsample.append(nn.ConvTranspose2d(prev, ch[k], 2, stride=2))
                prev = ch[k]
            else:
                self.upsample.append(nn.Identity())
            self.up.append(ResBlock(prev + ch[k], ch[k], td, g))
            prev = ch[k]
        self.norm_out = nn.GroupNorm(g, prev)
        self.conv_out = nn.Conv2d(prev, c.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        levels = len(self.config.channels)
        side = 2 ** (levels - 1)
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[-1] % side:
            raise ValueError(f"x must be (n, {self.config.in_channels}, H, W) with H, W "
                             f"divisible by {side}, got {tuple(x.shape)}")
        if t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(t.shape)}")
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.time_dim).to(x))
        h, skips = self.conv_in(x), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for up, block in zip(self.upsample, self.up):
            h = block(torch.cat([up(h), skips.pop()], 1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


# --- a metric for 2-D samples ----------------------------------------------------------

def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The squared energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Székely).

    Estimated from samples ``x`` ``(n, d)`` and ``y`` ``(m, d)`` with the unbiased
    within-set means (pairs of distinct points); zero in expectation exactly when the
    two distributions are equal, and positive otherwise. float64 throughout.
    """
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or len(v) < 2:
            raise ValueError(f"{name} must be a (n, d) tensor with n >= 2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[1]} and {y.shape[1]}")
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    n, m = len(x), len(y)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)
