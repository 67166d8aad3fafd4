"""Generative adversarial networks (chapter 15): objectives, toy data, models, metric.

A generator ``G`` maps noise ``z ~ N(0, I)`` of shape ``(n, z_dim)`` to samples
``G(z)``; a discriminator ``D`` maps a sample to a *logit* ``l`` with
``D(x) = sigmoid(l)``. Goodfellow et al. (2014) train them on the minimax game

    min_G max_D V(D, G) = E_{x ~ p_data} log D(x) + E_{z ~ p_z} log(1 - D(G(z))).

Everything here works with logits, so that ``log D = -softplus(-l)`` and
``log(1 - D) = -softplus(l)`` never take the logarithm of a rounded zero.

* Losses: :func:`discriminator_loss` (the negated ``V``, binary cross-entropy),
  :func:`generator_loss` (``"minimax"``: ``E log(1 - D(G(z)))``, which saturates;
  ``"non-saturating"``: ``-E log D(G(z))``), and the WGAN-GP critic of Gulrajani et al.
  (2017): :func:`gradient_penalty`, :func:`critic_loss`, :func:`wasserstein_generator_loss`.
* Densities on a grid: :func:`optimal_discriminator` ``D* = p_data / (p_data + p_g)``,
  :func:`value_function`, :func:`optimal_value` and :func:`jensen_shannon`, for the
  identity ``V(D*, G) = 2 JSD(p_data || p_g) - log 4``.
* Toy data: :func:`ring_means` and :func:`sample_ring` (a mixture of 8 Gaussians on a
  circle), and the mode metric of VEEGAN and PacGAN, :func:`mode_metrics`.
* Models: :func:`mlp_generator`/:func:`mlp_discriminator` (:class:`dlbook.mlp.MLP`) for
  2-D data, :class:`EnsembleMLP` (several seeds of one MLP evaluated as one batched
  model), :class:`ConvGenerator`/:class:`ConvDiscriminator` (DCGAN-style) for 28x28
  digits.
* Training loops with progress bars: :func:`train_2d` (ensembles on 2-D data, GAN or
  WGAN-GP) and :func:`train_images` (the DCGAN recipe on digits); :func:`sample`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import xlogy
from torch import nn
from tqdm.auto import tqdm

from .mlp import MLP, MLPConfig, activation

__all__ = [
    "discriminator_loss", "generator_loss", "gradient_penalty", "critic_loss",
    "wasserstein_generator_loss", "check_density", "optimal_discriminator",
    "value_function", "optimal_value", "jensen_shannon", "ring_means", "sample_ring",
    "ModeReport", "mode_metrics", "mlp_generator", "mlp_discriminator", "EnsembleMLP",
    "mlp_ensemble", "ConvGenerator", "ConvDiscriminator", "dcgan_init", "Run2D", "train_2d",
    "sample", "ImageRun", "train_images",
]

OBJECTIVES = ("minimax", "non-saturating", "wgan-gp")


# --- losses ----------------------------------------------------------------------------
# Every loss takes scores of shape (n,) or (n, 1) and returns the mean over the n samples;
# scores (S, n) or (S, n, 1) of an ensemble of S independent models (EnsembleMLP) give
# the S per-model means, shape (S,).

def _scores(t: torch.Tensor, name: str) -> torch.Tensor:
    """Scores ``(n,)``, ``(n, 1)``, ``(S, n)`` or ``(S, n, 1)`` as ``(n,)`` or ``(S, n)``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim >= 2 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim not in (1, 2) or t.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (n,) or (n, 1) (or (S, n) for an ensemble) "
                         f"with n > 0, got {tuple(t.shape)}")
    return t


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-V(D, G)`` estimated on a batch: the discriminator's binary cross-entropy.

    ``-mean(log D(x)) - mean(log(1 - D(G(z))))
    = mean(softplus(-l_real)) + mean(softplus(l_fake))`` for logits ``l`` ``(n,)``.
    """
    real, fake = _scores(real_logits, "real_logits"), _scores(fake_logits, "fake_logits")
    if real.ndim != fake.ndim:
        raise ValueError(f"real and fake logits differ in rank: {tuple(real.shape)}, {tuple(fake.shape)}")
    return F.softplus(-real).mean(-1) + F.softplus(fake).mean(-1)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The generator's loss on the logits ``l = logit D(G(z))`` ``(n,)`` of its samples.

    * ``"minimax"``: ``mean(log(1 - D(G(z)))) = -mean(softplus(l))``, the term of ``V``
      that ``G`` minimises; its derivative in ``l`` is ``-D(G(z))``, which vanishes
      when the discriminator rejects the samples (``D -> 0``): the loss *saturates*.
    * ``"non-saturating"``: ``-mean(log D(G(z))) = mean(softplus(-l))``; derivative
      ``-(1 - D(G(z)))``, close to ``-1`` exactly when ``D -> 0``.

    Both push ``D(G(z))`` up and have the same fixed points; Goodfellow et al. recommend
    the second.
    """
    fake = _scores(fake_logits, "fake_logits")
    if kind == "minimax":
        return -F.softplus(fake).mean(-1)
    if kind == "non-saturating":
        return F.softplus(-fake).mean(-1)
    raise ValueError(f"kind must be 'minimax' or 'non-saturating', got {kind!r}")


def _check_pair(real: torch.Tensor, fake: torch.Tensor, batch_dims: int) -> None:
    if batch_dims not in (1, 2):
        raise ValueError(f"batch_dims must be 1 (a batch (n, ...)) or 2 (an ensemble (S, n, ...)), "
                         f"got {batch_dims!r}")
    if real.shape != fake.shape or real.ndim <= batch_dims or 0 in real.shape[:batch_dims]:
        raise ValueError(f"real and fake must be non-empty batches of the same shape, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, alpha: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, batch_dims: int = 1) -> torch.Tensor:
    """WGAN-GP's penalty ``mean_i (||grad_x C(x_hat_i)||_2 - 1)^2`` (Gulrajani et al. 2017).

    ``x_hat_i = alpha_i x_i + (1 - alpha_i) x~_i`` lies on the segment between a real
    sample ``x_i`` and a generated one ``x~_i`` (batches ``(n, ...)``), with
    ``alpha_i ~ U(0, 1)`` drawn per sample unless ``alpha`` ``(n,)`` is given; the norm
    runs over each sample's own axes. For an ensemble, ``batch_dims=2``: batches
    ``(S, n, d)``, ``alpha`` ``(S, n)``, and the result is ``(S,)``. The gradient keeps
    its graph (``create_graph=True``), so the penalty back-propagates into the critic.
    """
    _check_pair(real, fake, batch_dims)
    batch = real.shape[:batch_dims]
    if alpha is None:
        alpha = torch.rand(batch, generator=generator).to(real.device, real.dtype)
    if alpha.shape != batch:
        raise ValueError(f"alpha must have shape {tuple(batch)}, got {tuple(alpha.shape)}")
    a = alpha.reshape(*batch, *([1] * (real.ndim - batch_dims)))
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    scores = _scores(critic(x_hat), "critic(x_hat)")
    if scores.shape != batch:
        raise ValueError(f"the critic must give one score per sample, {tuple(batch)}, "
                         f"got {tuple(scores.shape)}")
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(batch_dims).norm(dim=-1) - 1).square().mean(-1)


def critic_loss(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                fake: torch.Tensor, gp_weight: float = 10.0, alpha: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                batch_dims: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The WGAN-GP critic's loss ``mean C(x~) - mean C(x) + gp_weight * penalty``.

    ``mean C(x) - mean C(x~)`` estimates the Kantorovich-Rubinstein dual of the
    Wasserstein-1 distance, maximised over 1-Lipschitz critics ``C``; the penalty
    (:func:`gradient_penalty`) asks for unit gradient norm between the two sets instead
    of a hard constraint. Returns ``(loss, estimate)`` with ``estimate`` the detached
    ``mean C(x) - mean C(x~)``; both are ``(S,)`` for an ensemble (``batch_dims=2``).
    """
    if not gp_weight >= 0:
        raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
    _check_pair(real, fake, batch_dims)
    c_real = _scores(critic(real), "critic(real)")
    c_fake = _scores(critic(fake.detach()), "critic(fake)")
    penalty = gradient_penalty(critic, real, fake, alpha, generator, batch_dims)
    w = c_real.mean(-1) - c_fake.mean(-1)
    return -w + gp_weight * penalty, w.detach()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The WGAN generator's loss ``-mean C(G(z))`` on the critic's scores ``(n,)``."""
    return -_scores(fake_scores, "fake_scores").mean(-1)


# --- densities on a grid ---------------------------------------------------------------

def check_density(p, cell: float, name: str = "p", atol: float = 1e-6) -> np.ndarray:
    """``p`` as a float64 array of density values on a grid of cells of measure ``cell``.

    Raises ``ValueError`` unless every value is finite and non-negative and
    ``sum(p) * cell`` is 1 within ``atol`` (normalise first: ``p / (p.sum() * cell)``).
    """
    if not cell > 0:
        raise ValueError(f"cell (the measure of one grid cell) must be positive, got {cell}")
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0 or not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative density values")
    mass = float(p.sum() * cell)
    if abs(mass - 1) > atol:
        raise ValueError(f"{name} is not normalised: sum({name}) * cell = {mass:.6g}, not 1 "
                         f"(divide it by sum({name}) * cell)")
    return p


def _check_same_grid(p: np.ndarray, q: np.ndarray) -> None:
    if p.shape != q.shape:
        raise ValueError(f"the densities live on different grids: shapes {p.shape} and {q.shape}")


def optimal_discriminator(p_data, p_g, cell: float) -> np.ndarray:
    """``D*(x) = p_data(x) / (p_data(x) + p_g(x))`` on the grid (Goodfellow et al., Prop. 1).

    Where both densities vanish ``D*`` is arbitrary (such points carry no weight in
    ``V``); it is set to 1/2 there.
    """
    p = check_density(p_data, cell, "p_data")
    q = check_density(p_g, cell, "p_g")
    _check_same_grid(p, q)
    total = p + q
    return np.divide(p, total, out=np.full_like(p, 0.5), where=total > 0)


def value_function(d, p_data, p_g, cell: float) -> float:
    """``V(D, G) = sum_x cell * (p_data(x) log D(x) + p_g(x) log(1 - D(x)))`` on the grid.

    ``d`` holds ``D(x)`` in ``[0, 1]`` on the same grid; ``0 log 0`` counts as 0, so
    ``D = 0`` where ``p_data = 0`` (or ``D = 1`` where ``p_g = 0``) is allowed, but
    ``D = 1`` where ``p_g > 0`` gives ``-inf`` (see :func:`optimal_value`).
    """
    p = check_density(p_data, cell, "p_data")
    q = check_density(p_g, cell, "p_g")
    d = np.asarray(d, dtype=np.float64)
    _check_same_grid(p, q)
    _check_same_grid(p, d)
    if not np.all((d >= 0) & (d <= 1)):
        raise ValueError("D must take values in [0, 1]")
    return float(cell * (xlogy(p, d) + xlogy(q, 1 - d)).sum())


def optimal_value(p_data, p_g, cell: float) -> float:
    """``V(D*, G)`` for the optimal discriminator of :func:`optimal_discriminator`,

    ``sum_x cell * (p_data log(p_data / (p_data + p_g)) + p_g log(p_g / (p_data + p_g)))``.
    Computed from the densities rather than from the array ``D*``: where ``p_g`` is
    positive but tiny next to ``p_data``, ``D*`` rounds to exactly 1 and
    ``value_function(D*, ...)`` would return ``-inf``, although the term is negligible.
    """
    p = check_density(p_data, cell, "p_data")
    q = check_density(p_g, cell, "p_g")
    _check_same_grid(p, q)
    total = p + q
    safe = np.where(total > 0, total, 1.0)
    return float(cell * (xlogy(p, p / safe) + xlogy(q, q / safe)).sum())


def jensen_shannon(p, q, cell: float) -> float:
    """``JSD(p || q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, in nats.

    Lies in ``[0, log 2]``. (``scipy.spatial.distance.jensenshannon`` returns the
    *square root* of this quantity, for probability vectors ``p * cell``.)
    """
    p = check_density(p, cell, "p")
    q = check_density(q, cell, "q")
    _check_same_grid(p, q)
    m = (p + q) / 2
    kl_pm = xlogy(p, p) - xlogy(p, m)
    kl_qm = xlogy(q, q) - xlogy(q, m)
    return float(cell * (kl_pm + kl_qm).sum() / 2)


# --- the ring of Gaussians and the mode metric -----------------------------------------

def ring_means(modes: int = 8, radius: float = 1.0) -> torch.Tensor:
    """``(modes, 2)`` centres ``radius * (cos 2 pi k / modes, sin 2 pi k / modes)``.

    ``k = 0, ..., modes - 1``: the endpoint ``2 pi`` is excluded, so that no two
    centres coincide.
    """
    if not isinstance(modes, int) or modes < 1 or not radius > 0:
        raise ValueError(f"need a positive int of modes and a positive radius, got {modes}, {radius}")
    angles = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
    return torch.stack([angles.cos(), angles.sin()], 1) * radius


def sample_ring(n: int, modes: int = 8, radius: float = 1.0, std: float = 0.01,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` float32 samples of the equal-weight mixture of ``N(mu_k, std^2 I)``."""
    if not isinstance(n, int) or n < 1 or not std > 0:
        raise ValueError(f"need a positive int n and a positive std, got {n}, {std}")
    means = ring_means(modes, radius).float()
    k = torch.randint(0, modes, (n,), generator=generator)
    return means[k] + std * torch.randn(n, 2, generator=generator)


@dataclass(frozen=True)
class ModeReport:
    """Result of :func:`mode_metrics`."""

    modes_captured: int          # modes with >= min_count high-quality samples
    high_quality: float          # fraction of the samples within `threshold` std of a mode
    counts: tuple[int, ...]      # high-quality samples assigned to each mode
    n_samples: int

    @property
    def modes(self) -> int:
        return len(self.counts)

    @property
    def kl_to_uniform(self) -> float:
        """``KL(h || u) = sum_k h_k log(K h_k)`` of the histogram ``h`` of the high-quality
        samples over the ``K`` modes against the uniform ``u``: 0 for perfect balance,
        ``log K`` when all of them sit on one mode; NaN when there is none."""
        total = sum(self.counts)
        if total == 0:
            return math.nan
        h = np.asarray(self.counts, dtype=np.float64) / total
        return float(xlogy(h, h * len(h)).sum())


def mode_metrics(samples: torch.Tensor, means: torch.Tensor, std: float,
                 threshold: float = 3.0, min_count: int = 1) -> ModeReport:
    """The mode metric of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018).

    Each sample ``x`` ``(n, 2)`` is assigned to the mode ``k`` of ``means`` ``(K, 2)``
    with the smallest standardised distance ``||x - mu_k|| / std``; it is *high quality*
    when that distance is below ``threshold`` (3 standard deviations). A mode is
    *captured* when at least ``min_count`` high-quality samples are assigned to it;
    ``min_count=1`` is the rule of PacGAN's code (``MetricLogger`` in
    ``pacgan/extensions.py``) and of VEEGAN's definition ("the mixture components whose
    mean is nearest to at least one high quality sample").
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[0] == 0:
        raise ValueError(f"samples must be a non-empty (n, d) tensor, got {getattr(samples, 'shape', samples)}")
    if means.ndim != 2 or means.shape[1] != samples.shape[1]:
        raise ValueError(f"means must be (K, {samples.shape[1]}), got {tuple(means.shape)}")
    if not std > 0 or not threshold > 0:
        raise ValueError(f"std and threshold must be positive, got {std}, {threshold}")
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}")
    x = samples.detach().double().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("samples hold NaN or infinite values (did the training diverge?)")
    dist = torch.cdist(x, means.double().cpu()) / std           # (n, K)
    best, mode = dist.min(1)
    good = best < threshold
    counts = torch.bincount(mode[good], minlength=means.shape[0])
    return ModeReport(modes_captured=int((counts >= min_count).sum()),
                      high_quality=float(good.double().mean()),
                      counts=tuple(int(c) for c in counts), n_samples=x.shape[0])


# --- models ----------------------------------------------------------------------------

def mlp_generator(z_dim: int = 2, hidden: int = 128, depth: int = 2, out_dim: int = 2,
                  activation: str = "relu") -> MLP:
    """``G: (n, z_dim) -> (n, out_dim)``, ``depth`` hidden layers of ``hidden`` units."""
    return MLP(MLPConfig((z_dim, *([hidden] * depth), out_dim), activation))


def mlp_discriminator(in_dim: int = 2, hidden: int = 128, depth: int = 2,
                      activation: str = "relu") -> MLP:
    """``D: (n, in_dim) -> (n, 1)`` logits (or critic scores), ``depth`` hidden layers."""
    return MLP(MLPConfig((in_dim, *([hidden] * depth), 1), activation))


class EnsembleMLP(nn.Module):
    """``S`` independent copies of one :class:`dlbook.mlp.MLP` layout, evaluated together.

    Layer ``l`` holds the members' weights stacked as ``(S, d_{l-1}, d_l)`` and biases
    ``(S, 1, d_l)``; ``forward`` maps ``(S, n, d_0)`` to ``(S, n, d_{L+1})`` with one
    batched product per layer, ``Z_l[s] = sigma(Z_{l-1}[s] W_l[s] + b_l[s])``, so member
    ``s`` computes exactly what ``members[s]`` computes on ``x[s]``. Nothing couples the
    members: a loss that *sums* their losses gives each its own gradient, and Adam, which
    acts element-wise, updates each as if it were trained alone. Several seeds of a small
    model then train in one loop, at a fraction of the cost of separate loops.
    """

    def __init__(self, members: Sequence[MLP]):
        super().__init__()
        members = list(members)
        if not members or any(not isinstance(m, MLP) for m in members):
            raise TypeError("EnsembleMLP needs a non-empty sequence of dlbook.mlp.MLP models")
        configs = {m.config for m in members}
        if len(configs) != 1:
            raise ValueError(f"the members must share one layout, got {sorted(map(str, configs))}")
        self.config = members[0].config
        # torch.relu equals mlp.relu (a torch.where) value for value, at a third of the cost
        name = self.config.activation
        self.sigma = torch.relu if name == "relu" else activation(name)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.weights[l].detach() for m in members]))
            for l in range(len(self.config.sizes) - 1))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.biases[l].detach() for m in members]))
            for l in range(len(self.config.sizes) - 1))

    @property
    def size(self) -> int:
        """The number of members ``S``."""
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[0] != self.size or x.shape[2] != self.config.sizes[0]:
            raise ValueError(f"x must have shape ({self.size}, n, {self.config.sizes[0]}), "
                             f"got {tuple(x.shape)}")
        last = len(self.weights) - 1
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if l < last:
                x = self.sigma(x)
        return x

    def member(self, s: int) -> MLP:
        """A copy of member ``s`` as a plain :class:`dlbook.mlp.MLP`."""
        net = MLP(self.config)
        with torch.no_grad():
            for w, b, w_s, b_s in zip(net.weights, net.biases, self.weights, self.biases):
                w.copy_(w_s[s])
                b.copy_(b_s[s])
        return net


def mlp_ensemble(make: Callable[[], MLP], seeds: Sequence[int]) -> EnsembleMLP:
    """An :class:`EnsembleMLP` whose member ``s`` is ``make()`` called after
    ``torch.manual_seed(seeds[s])``: the same initial weights as a separate run.
    (This reseeds torch's global generator, as every seeded run does.)"""
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(make())
    return EnsembleMLP(members)


class ConvGenerator(nn.Module):
    """DCGAN-style generator for ``(n, 1, 28, 28)`` images in ``[-1, 1]``.

    ``z (n, z_dim)`` -> linear -> ``(n, 2w, 7, 7)`` -> BN, ReLU -> transposed conv 4x4
    stride 2 -> ``(n, w, 14, 14)`` -> BN, ReLU -> transposed conv 4x4 stride 2 ->
    ``(n, 1, 28, 28)`` -> tanh. Radford et al.'s rules: no pooling, batch norm
    everywhere except the output, ReLU inside, tanh at the output.
    """

    def __init__(self, z_dim: int = 64, width: int = 32):
        super().__init__()
        self.z_dim, self.width = z_dim, width
        self.project = nn.Linear(z_dim, 2 * width * 7 * 7, bias=False)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (n, {self.z_dim}), got {tuple(z.shape)}")
        return self.net(self.project(z).view(-1, 2 * self.width, 7, 7))


class ConvDiscriminator(nn.Module):
    """DCGAN-style discriminator: ``(n, 1, 28, 28)`` in ``[-1, 1]`` -> ``(n,)`` logits.

    conv 4x4 stride 2 -> ``(n, w, 14, 14)`` -> LeakyReLU(0.2) -> conv 4x4 stride 2 ->
    ``(n, 2w, 7, 7)`` -> BN, LeakyReLU(0.2) -> linear -> logit. Strided convolutions
    instead of pooling, no batch norm on the input layer (Radford et al.).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x must have shape (n, 1, 28, 28), got {tuple(x.shape)}")
        return self.net(x)[:, 0]


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.'s initialisation: conv and linear weights ~ N(0, 0.02^2), batch-norm
    scales ~ N(1, 0.02^2), biases 0. Use as ``model.apply(dcgan_init)``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# --- training on 2-D data --------------------------------------------------------------

@dataclass
class Run2D:
    """What :func:`train_2d` records for an ensemble of ``S`` runs.

    ``d_loss``: ``(steps, S)`` the discriminator's (or critic's) loss at its last update
    of each step; ``g_loss``: ``(steps, S)`` the generator's loss; ``snapshots[step]``:
    ``(S, n_fixed, 2)`` samples ``G(z_fixed)`` after ``step`` generator updates.
    """

    d_loss: torch.Tensor
    g_loss: torch.Tensor
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def sample(generator_net: nn.Module, n: int, z_dim: int,
           noise: torch.Generator | None = None, device=None,
           z: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` samples ``G(z)`` on the CPU, in eval mode, ``z ~ N(0, I)`` drawn from ``noise``.

    ``(n, ...)`` for a single network; ``(S, n, ...)`` for an :class:`EnsembleMLP`. A
    given ``z`` is used as it is. Eval mode matters for batch norm: the running
    statistics replace the batch's.
    """
    device = device if device is not None else next(generator_net.parameters()).device
    was_training = generator_net.training
    generator_net.eval()
    if z is None:
        shape = (generator_net.size, n, z_dim) if isinstance(generator_net, EnsembleMLP) else (n, z_dim)
        z = torch.randn(shape, generator=noise)
    out = generator_net(z.to(device)).cpu()
    generator_net.train(was_training)
    return out


def _prepare(generator_net: nn.Module, discriminator_net: nn.Module, snapshot_steps,
             steps: int, device) -> torch.device:
    """Shared start of both training loops: check the snapshot steps, move both networks
    to ``device`` (default: the generator's) in training mode, and return the device."""
    bad = [k for k in snapshot_steps if not 0 <= k <= steps]
    if bad:
        raise ValueError(f"snapshot steps must lie in [0, {steps}], got {bad}")
    device = device if device is not None else next(generator_net.parameters()).device
    generator_net.to(device).train()
    discriminator_net.to(device).train()
    return device


def train_2d(generator_net: EnsembleMLP, discriminator_net: EnsembleMLP,
             sample_real: Callable[[int, torch.Generator], torch.Tensor], *, objective: str,
             steps: int, batch_size: int = 256, lr_g: float = 1e-4, lr_d: float = 1e-4,
             betas: tuple[float, float] = (0.5, 0.999), critic_steps: int = 1,
             gp_weight: float = 0.1, snapshot_steps: Sequence[int] = (), n_fixed: int = 2500,
             seed: int = 0, device=None, progress: bool = True,
             desc: str = "training") -> Run2D:
    """Train ``S`` GANs on 2-D data at once, with alternating Adam updates.

    ``generator_net`` and ``discriminator_net`` are ensembles of ``S`` members
    (:class:`EnsembleMLP`); member ``s`` of one plays against member ``s`` of the other
    only. One step: ``critic_steps`` updates of the discriminators, each on a fresh real
    batch ``sample_real(S * batch_size, gen)`` (``batch_size`` rows per member) and a
    fresh generated one, then one update of the generators. ``objective``:

    * ``"minimax"`` or ``"non-saturating"``: :func:`discriminator_loss` and
      :func:`generator_loss` of that kind;
    * ``"wgan-gp"``: :func:`critic_loss` with ``gp_weight`` and
      :func:`wasserstein_generator_loss`.

    The members' losses are summed, so that each gets its own gradient. Real data, noise
    and the penalty's ``alpha`` come from one ``torch.Generator`` seeded with ``seed``;
    the initial weights are the caller's (see :func:`mlp_ensemble`).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for name, value in (("steps", steps), ("critic_steps", critic_steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(generator_net, EnsembleMLP) or not isinstance(discriminator_net, EnsembleMLP):
        raise TypeError("train_2d trains ensembles: wrap the models in EnsembleMLP (mlp_ensemble)")
    S = generator_net.size
    if discriminator_net.size != S:
        raise ValueError(f"{S} generators but {discriminator_net.size} discriminators")
    z_dim = generator_net.config.sizes[0]
    device = _prepare(generator_net, discriminator_net, snapshot_steps, steps, device)
    gen = torch.Generator().manual_seed(seed)
    z_fixed = torch.randn(S, n_fixed, z_dim, generator=gen).to(device)
    opt_g = torch.optim.Adam(generator_net.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator_net.parameters(), lr=lr_d, betas=betas)
    d_losses, g_losses, snapshots = [], [], {}
    wanted = set(snapshot_steps)

    def noise() -> torch.Tensor:
        return torch.randn(S, batch_size, z_dim, generator=gen).to(device)

    def snapshot(step: int) -> None:
        if step in wanted:
            with torch.no_grad():
                snapshots[step] = generator_net(z_fixed).cpu()

    snapshot(0)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        for _ in range(critic_steps):
            real = sample_real(S * batch_size, gen).reshape(S, batch_size, -1).to(device)
            fake = generator_net(noise()).detach()
            if objective == "wgan-gp":
                d_loss, _ = critic_loss(discriminator_net, real, fake, gp_weight,
                                        generator=gen, batch_dims=2)
            else:
                d_loss = discriminator_loss(discriminator_net(real), discriminator_net(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.sum().backward()
            opt_d.step()
        scores = discriminator_net(generator_net(noise()))
        if objective == "wgan-gp":
            g_loss = wasserstein_generator_loss(scores)
        else:
            g_loss = generator_loss(scores, objective)
        opt_g.zero_grad(set_to_none=True)
        g_loss.sum().backward()
        opt_g.step()
        d_losses.append(d_loss.detach().cpu())
        g_losses.append(g_loss.detach().cpu())
        snapshot(step)
    return Run2D(torch.stack(d_losses), torch.stack(g_losses), snapshots)


# --- training on images ----------------------------------------------------------------

@dataclass
class ImageRun:
    """What :func:`train_images` records, one value per step (generator update).

    ``d_loss``/``g_loss``: the discriminator's loss :func:`discriminator_loss` and the
    generator's non-saturating loss; ``d_real``/``d_fake``: the batch means of ``D(x)``
    and ``D(G(z))`` seen by the discriminator's update; ``snapshots[step]``: the images
    ``G(z_fixed)`` ``(n_fixed, 1, 28, 28)`` in ``[-1, 1]`` after ``step`` updates.
    """

    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    d_real: list[float] = field(default_factory=list)
    d_fake: list[float] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def train_images(generator_net: nn.Module, discriminator_net: nn.Module, images: torch.Tensor,
                 *, steps: int, batch_size: int = 64, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), snapshot_steps: Sequence[int] = (),
                 n_fixed: int = 64, seed: int = 0, device=None, progress: bool = True,
                 desc: str = "training") -> ImageRun:
    """The DCGAN recipe: alternating Adam updates of ``D`` and ``G`` on image batches.

    ``images``: ``(N, 1, 28, 28)`` floats in ``[-1, 1]`` (the range of the generator's
    tanh). Each step draws a batch of ``batch_size`` real images (passes over a fresh
    permutation of the data, epoch after epoch) and as many generated ones, updates ``D``
    on :func:`discriminator_loss`, then updates ``G`` on the non-saturating
    :func:`generator_loss` of the same generated batch. Radford et al.'s settings are
    the defaults (Adam, learning rate 2e-4, ``beta1 = 0.5``, their batch size was 128).
    Data order and noise come from a ``torch.Generator`` seeded with ``seed``; the
    initial weights are the caller's.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("n_fixed", n_fixed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be a (N, 1, 28, 28) tensor, got {getattr(images, 'shape', images)}")
    if images.min() < -1 - 1e-6 or images.max() > 1 + 1e-6:
        raise ValueError("images must lie in [-1, 1] (the generator ends with tanh): use 2 x - 1 "
                         "for pixels x in [0, 1]")
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
    device = _prepare(generator_net, discriminator_net, snapshot_steps, steps, device)
    z_dim = generator_net.z_dim
    gen = torch.Generator().manual_seed(seed)
    z_fixed = torch.randn(n_fixed, z_dim, generator=gen).to(device)
    opt_g = torch.optim.Adam(generator_net.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator_net.parameters(), lr=lr, betas=betas)
    run = ImageRun()
    wanted = set(snapshot_steps)

    def snapshot(step: int) -> None:
        if step in wanted:
            run.snapshots[step] = sample(generator_net, n_fixed, z_dim, device=device,
                                         z=z_fixed)

    per_epoch = len(images) // batch_size
    order = torch.randperm(len(images), generator=gen)
    snapshot(0)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        k = (step - 1) % per_epoch
        if k == 0 and step > 1:
            order = torch.randperm(len(images), generator=gen)
        real = images[order[k * batch_size:(k + 1) * batch_size]].to(device)
        fake = generator_net(torch.randn(batch_size, z_dim, generator=gen).to(device))
        real_logits, fake_logits = discriminator_net(real), discriminator_net(fake.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = generator_loss(discriminator_net(fake), "non-saturating")
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        run.d_loss.append(d_loss.item())
        run.g_loss.append(g_loss.item())
        run.d_real.append(torch.sigmoid(real_logits.detach()).mean().item())
        run.d_fake.append(torch.sigmoid(fake_logits.detach()).mean().item())
        snapshot(step)
    return run
