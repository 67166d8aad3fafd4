"""Variational autoencoders (chapter 16): the ELBO, its gradients, bounds and diagnostics.

The model of Kingma & Welling (2014) and Rezende et al. (2014) on binary images
``x ∈ {0, 1}^D`` (``D = 784`` for MNIST), with a latent ``z ∈ R^d``:

* prior ``p(z) = N(0, I_d)``;
* decoder ``p_θ(x | z) = Π_i Bernoulli(x_i; sigmoid(l_i))`` with logits ``l = g_θ(z)``,
  an MLP ``(…, d) -> (…, D)``;
* encoder ``q_φ(z | x) = N(μ, diag σ²)`` with ``(μ, log σ²) = h_φ(x)``, an MLP
  ``(n, D) -> (n, 2d)``.

Training maximises the evidence lower bound (ELBO) of each image,

    log p(x) >= L(x) = E_{q(z|x)} log p(x | z) - KL(q(z | x) || p(z)),

whose KL term has the closed form (:func:`gaussian_kl`)

    KL = 1/2 Σ_j (μ_j² + σ_j² - 1 - log σ_j²),

and whose first term is estimated with ``z = μ + σ ⊙ ε``, ``ε ~ N(0, I)`` (the
reparameterisation, :func:`reparameterize`), so that gradients flow into ``μ`` and
``σ``. The importance-weighted bound of Burda et al. (2016), :func:`iwae_bound`,

    L_k(x) = E log (1/k) Σ_{j=1}^k p(x, z_j) / q(z_j | x),   z_j ~ q(z | x),

equals ``L`` at ``k = 1``, grows with ``k`` and tends to ``log p(x)``: ``-L_k`` is the
book's estimate of the negative log-likelihood, in nats. Bernoulli likelihoods need
binary pixels: :func:`binarize` samples them from MNIST's gray levels (statically with a
seed, or afresh for every batch in :func:`train`); gray levels under a Bernoulli
"likelihood" give numbers that are not log-probabilities of anything, and
:func:`bernoulli_log_likelihood` refuses them.

Also here: :func:`active_units` (Burda et al.'s diagnostic of posterior collapse,
``Cov_x(E_q[z_j]) > 0.01``), :class:`KLSchedule` (a KL weight ``β``, linear KL
annealing, free bits), the training loop :func:`train`, and the two gradient
estimators of ``∇ E_q f(z)``: :func:`reparam_gradients` and
:func:`score_function_gradients` (REINFORCE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .mlp import MLP, MLPConfig

__all__ = [
    "binarize", "check_binary", "gaussian_kl", "bernoulli_log_likelihood",
    "gaussian_log_density", "reparameterize", "VAEConfig", "VAE", "ELBOTerms", "elbo",
    "iwae_bound", "active_units", "Scores", "evaluate", "KLSchedule", "TrainRun", "train",
    "reparam_gradients", "score_function_gradients", "normal_grid", "interpolate",
]

LOG_2PI = math.log(2 * math.pi)
ACTIVE_THRESHOLD = 1e-2                 # Burda et al. (2016): Cov_x(E_q[z_j]) > 0.01


# --- data ------------------------------------------------------------------------------

def _check_tensor(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must hold floats, got dtype {t.dtype}")
    return t


def binarize(images: torch.Tensor, seed: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary images ``x_i ~ Bernoulli(p_i)`` from gray levels ``p`` in ``[0, 1]``, same shape.

    *Static* binarisation draws once with ``seed`` (the same images on every call);
    *dynamic* binarisation (:func:`train`'s default) draws afresh for every batch from a
    running ``generator``. Give one of the two, or neither (torch's global generator).
    """
    images = _check_tensor(images, "images")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must be gray levels in [0, 1] (MNIST pixels / 255)")
    if seed is not None and generator is not None:
        raise ValueError("give a seed (static binarisation) or a generator, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.cpu(), generator=generator).to(images.device)


def check_binary(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """``x`` if every entry is 0 or 1, else ``ValueError`` (binarise gray levels first)."""
    x = _check_tensor(x, name)
    if not torch.all((x == 0) | (x == 1)):
        raise ValueError(f"{name} must be binary (0/1): a Bernoulli likelihood of gray levels "
                         "is not a probability of anything; use vae.binarize first")
    return x


def _flat(x: torch.Tensor, dim: int, name: str = "x") -> torch.Tensor:
    """``(n, D)`` from ``(n, D)`` or images ``(n, 28, 28)``/``(n, 1, 28, 28)``."""
    x = _check_tensor(x, name)
    if x.ndim < 2 or x[0].numel() != dim:
        raise ValueError(f"{name} must have shape (n, {dim}) (or images with {dim} pixels), "
                         f"got {tuple(x.shape)}")
    return x.reshape(x.shape[0], dim)


# --- densities and the KL term ---------------------------------------------------------

def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, per_dim: bool = False) -> torch.Tensor:
    """``KL(N(μ, diag σ²) || N(0, I)) = 1/2 Σ_j (μ_j² + σ_j² - 1 - log σ_j²)``, in nats.

    ``mu``, ``logvar = log σ²``: ``(..., d)``. Returns ``(...)``, or the ``(..., d)``
    terms of the sum with ``per_dim=True`` (each is ``KL(q(z_j | x) || N(0, 1))``).
    """
    mu, logvar = _check_tensor(mu, "mu"), _check_tensor(logvar, "logvar")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar differ in shape: {tuple(mu.shape)}, {tuple(logvar.shape)}")
    terms = 0.5 * (mu.square() + logvar.exp() - 1 - logvar)
    return terms if per_dim else terms.sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x | z) = Σ_i x_i log s_i + (1 - x_i) log(1 - s_i)``, ``s = sigmoid(l)``.

    Computed as ``Σ_i x_i l_i - softplus(l_i)`` (no logarithm of a rounded 0). ``logits``
    ``(..., D)`` broadcasts against binary ``x`` ``(n, D)``; returns ``(..., n)``.
    """
    logits = _check_tensor(logits, "logits")
    x = check_binary(x)
    if logits.shape[-1] != x.shape[-1]:
        raise ValueError(f"logits have {logits.shape[-1]} pixels, x has {x.shape[-1]}")
    if x.ndim == 2 and logits.ndim >= 2 and logits.shape[-2] == x.shape[0]:
        # Σ_i x_i l_i as one batched product, without the (..., n, D) temporary x * l
        return torch.einsum("...nd,nd->...n", logits, x) - F.softplus(logits).sum(-1)
    return (x * logits - F.softplus(logits)).sum(-1)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; μ, diag σ²) = -1/2 Σ_j (log 2π + log σ_j² + (z_j - μ_j)² / σ_j²)``.

    All three broadcast to ``(..., d)``; returns ``(...)``.
    """
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() / logvar.exp()).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``z = μ + σ ⊙ ε`` with ``σ = exp(log σ² / 2)``: a sample of ``N(μ, diag σ²)`` that is
    a differentiable function of ``(μ, log σ²)`` for noise ``ε ~ N(0, I)`` ``(..., d)``."""
    return mu + (0.5 * logvar).exp() * eps


# --- the model -------------------------------------------------------------------------

FAST_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass(frozen=True)
class VAEConfig:
    """An MLP VAE: ``x_dim`` pixels, the encoder's hidden widths ``hidden`` (the decoder
    uses them in reverse), ``z_dim`` latent dimensions, the hidden activation.

    The defaults are the one-stochastic-layer model of Burda et al. (2016): two hidden
    layers of 200 tanh units on each side and 50 latent dimensions.

    ``autoregressive=True`` gives the decoder a view of the image itself: pixel ``i``
    (in raster order) also sees the pixels before it, ``l_i = g_i(z) + Σ_{j<i} x_j W_ji``
    (a fully visible sigmoid belief net, conditioned on ``z``). Such a decoder can model
    much of an image without ``z``, the setting in which posterior collapse is usually met.
    """

    x_dim: int = 784
    hidden: tuple[int, ...] = (200, 200)
    z_dim: int = 50
    activation: str = "tanh"
    autoregressive: bool = False

    def __post_init__(self):
        sizes = (self.x_dim, *self.hidden, self.z_dim)
        if not isinstance(self.hidden, tuple) or any(
                not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise ValueError(f"x_dim, z_dim and the hidden widths (a tuple) must be positive "
                             f"ints, got x_dim={self.x_dim!r}, hidden={self.hidden!r}, "
                             f"z_dim={self.z_dim!r}")
        if not isinstance(self.autoregressive, bool):
            raise TypeError(f"autoregressive must be a bool, got {self.autoregressive!r}")
        if self.activation not in FAST_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(FAST_ACTIVATIONS)}, "
                             f"got {self.activation!r}")


def _run(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """``net``'s forward propagation Z_l = σ(Z_{l-1} W_l + b_l), with torch's own tanh/relu
    (equal to :mod:`dlbook.mlp`'s to rounding, and faster)."""
    sigma = FAST_ACTIVATIONS[net.config.activation]
    batch = x.shape[:-1]                       # (n,) or (k, n): one matrix product per layer
    x = x.reshape(-1, x.shape[-1])
    last = len(net.weights) - 1
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        x = torch.addmm(b, x, w)
        if l < last:
            x = sigma(x)
    return x.reshape(*batch, x.shape[-1])


class VAE(nn.Module):
    """Gaussian encoder and Bernoulli decoder, two :class:`dlbook.mlp.MLP`.

    ``encoder``: ``(n, D) -> (n, 2d)``, split into ``μ`` and ``log σ²``;
    ``decoder``: ``(…, d) -> (…, D)`` logits. With ``config.autoregressive``, ``context``
    ``(D, D)`` holds the weights ``W_ji`` of the earlier pixels ``j < i`` (``mask`` keeps
    the rest at zero), added to the logits of :meth:`decode`.
    """

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.encoder = MLP(MLPConfig((c.x_dim, *c.hidden, 2 * c.z_dim), c.activation))
        self.decoder = MLP(MLPConfig((c.z_dim, *reversed(c.hidden), c.x_dim), c.activation))
        if c.autoregressive:
            self.context = nn.Parameter(torch.zeros(c.x_dim, c.x_dim))
            self.register_buffer("mask", torch.ones(c.x_dim, c.x_dim).triu(1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)`` of ``q(z | x)``, each ``(n, d)``, for ``x`` ``(n, D)`` (or images)."""
        h = _run(self.encoder, _flat(x, self.config.x_dim))
        return h[:, :self.config.z_dim], h[:, self.config.z_dim:]

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(…, D)`` of ``p(x | z)`` for ``z`` ``(…, d)``.

        An autoregressive decoder also needs the image ``x`` ``(n, D)`` whose pixels it
        conditions on (``z`` is then ``(n, d)`` or ``(k, n, d)``); the logit of pixel ``i``
        depends on ``x_j`` for ``j < i`` only.
        """
        z = _check_tensor(z, "z")
        if z.ndim < 1 or z.shape[-1] != self.config.z_dim:
            raise ValueError(f"z must have shape (..., {self.config.z_dim}), got {tuple(z.shape)}")
        logits = _run(self.decoder, z)
        if not self.config.autoregressive:
            return logits
        if x is None:
            raise ValueError("an autoregressive decoder needs the image x: decode(z, x)")
        return logits + _flat(x, self.config.x_dim) @ (self.context * self.mask)

    @torch.no_grad()
    def probabilities(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``sigmoid`` of :meth:`decode`, ``(…, D)`` in ``[0, 1]``: the decoder's mean image
        ``E[x | z]`` (for an autoregressive decoder, each pixel's probability given ``z``
        and the earlier pixels of ``x``)."""
        return torch.sigmoid(self.decode(z, x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               binary: bool = False) -> torch.Tensor:
        """``n`` images from the model, ``(n, D)`` on the CPU: ``z ~ N(0, I)`` then the mean
        ``sigmoid(g(z))`` (``binary=True``: a Bernoulli draw of the pixels as well).

        An autoregressive decoder draws the pixels one at a time, each from its
        probability given the pixels drawn before it; ``binary=False`` then returns those
        probabilities.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        device = self.encoder.weights[0].device
        z = torch.randn(n, self.config.z_dim, generator=generator)
        if not self.config.autoregressive:
            p = self.probabilities(z.to(device)).cpu()
            return torch.bernoulli(p, generator=generator) if binary else p
        base = _run(self.decoder, z.to(device)).cpu()
        weights = (self.context * self.mask).cpu()
        x, p = torch.zeros_like(base), torch.zeros_like(base)
        for i in range(self.config.x_dim):
            p[:, i] = torch.sigmoid(base[:, i] + x @ weights[:, i])
            x[:, i] = torch.bernoulli(p[:, i], generator=generator)
        return x if binary else p


# --- the ELBO and the importance-weighted bound ----------------------------------------

@dataclass
class ELBOTerms:
    """The two terms of the ELBO of each of ``n`` images, in nats.

    ``recon``: ``(n,)`` the Monte Carlo estimate of ``E_q log p(x | z)``; ``kl``: ``(n,)``
    the closed-form ``KL(q(z | x) || p(z))``; ``kl_per_dim``: ``(n, d)`` its terms;
    ``mu``, ``logvar``: ``(n, d)`` the encoder's outputs.
    """

    recon: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        """``L(x) = E_q log p(x | z) - KL``, ``(n,)``."""
        return self.recon - self.kl


def _check_samples(k: int, name: str) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{name} must be a positive int, got {k!r}")


def elbo(model: VAE, x: torch.Tensor, n_samples: int = 1,
         generator: torch.Generator | None = None) -> ELBOTerms:
    """The ELBO of binary images ``x`` ``(n, D)``, reparameterised and differentiable.

    ``E_q log p(x | z)`` is averaged over ``n_samples`` draws ``z = μ + σ ε``; the noise
    ``ε`` is drawn on the CPU from ``generator`` (the same numbers on every device).
    """
    _check_samples(n_samples, "n_samples")
    x = check_binary(_flat(x, model.config.x_dim))
    mu, logvar = model.encode(x)
    eps = torch.randn((n_samples, *mu.shape), generator=generator).to(mu.device, mu.dtype)
    z = reparameterize(mu, logvar, eps)                              # (S, n, d)
    recon = bernoulli_log_likelihood(model.decode(z, x), x).mean(0)  # (n,)
    per_dim = gaussian_kl(mu, logvar, per_dim=True)
    return ELBOTerms(recon, per_dim.sum(-1), per_dim, mu, logvar)


def iwae_bound(model: VAE, x: torch.Tensor, k: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``L_k(x) = log (1/k) Σ_j w_j`` with ``w_j = p(x | z_j) p(z_j) / q(z_j | x)``, ``(n,)``.

    One draw of the bound for each of the binary images ``x`` ``(n, D)``, with ``k``
    samples ``z_j ~ q(z | x)``; ``log Σ exp`` keeps the sum of the tiny weights finite.
    ``E L_1`` is the ELBO and ``E L_k`` increases towards ``log p(x)`` with ``k``
    (Burda et al. 2016, Theorem 1). Memory grows as ``k n D``: call it on batches.
    """
    _check_samples(k, "k")
    x = check_binary(_flat(x, model.config.x_dim))
    mu, logvar = model.encode(x)
    eps = torch.randn((k, *mu.shape), generator=generator).to(mu.device, mu.dtype)
    z = reparameterize(mu, logvar, eps)                              # (k, n, d)
    log_q = -0.5 * (LOG_2PI + logvar + eps.square()).sum(-1)         # (k, n)
    log_prior = -0.5 * (LOG_2PI + z.square()).sum(-1)
    log_w = bernoulli_log_likelihood(model.decode(z, x), x) + log_prior - log_q
    return torch.logsumexp(log_w, 0) - math.log(k)


@torch.no_grad()
def active_units(model: VAE, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD,
                 batch_size: int = 1000) -> tuple[int, torch.Tensor]:
    """Burda et al.'s active units: latent ``j`` is active when ``Cov_x(E_q[z_j]) > threshold``.

    ``E_q[z_j | x] = μ_j(x)``; its variance over the images ``x`` ``(n, D)`` (binary or
    not: only the encoder sees them) says whether the posterior mean of ``z_j`` depends
    on the image at all. Returns ``(count, variances (d,))``. A collapsed unit has
    ``q(z_j | x) ≈ N(0, 1)`` for every ``x``, hence variance ≈ 0.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    x = _flat(x, model.config.x_dim)
    if len(x) < 2:
        raise ValueError("need at least two images for a variance")
    device = model.encoder.weights[0].device
    mu = torch.cat([model.encode(x[i:i + batch_size].to(device))[0].cpu()
                    for i in range(0, len(x), batch_size)])
    return _count_active(mu, threshold)


def _count_active(mu: torch.Tensor, threshold: float) -> tuple[int, torch.Tensor]:
    """``(count, variances)`` of the posterior means ``mu`` ``(n, d)`` over the images."""
    variances = mu.double().var(0)
    return int((variances > threshold).sum()), variances


@dataclass(frozen=True)
class Scores:
    """Means over a set of binary images, in nats per image, from :func:`evaluate`."""

    neg_elbo: float              # -L(x), one reparameterised sample per image
    recon: float                 # -E_q log p(x | z), the reconstruction term
    kl: float                    # KL(q(z | x) || p(z))
    nll: float | None            # -L_k(x), the importance-weighted estimate of -log p(x)
    k: int                       # samples of the importance-weighted bound (0: not computed)
    active: int                  # active units (Cov_x E_q[z_j] > 0.01)
    n: int                       # images scored
    nll_sem: float | None = None  # standard error of the mean of -L_k over the images


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, k: int = 0, seed: int = 0,
             batch_size: int | None = None) -> Scores:
    """``-ELBO``, its two terms, ``-L_k`` (if ``k > 0``) and the active units on binary
    ``x`` ``(n, D)``, in eval mode, batch by batch; the noise comes from ``seed``."""
    x = check_binary(_flat(x, model.config.x_dim))
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if len(x) < 2:
        raise ValueError("need at least two images (the active units are a variance)")
    batch_size = batch_size or max(1, 20000 // max(k, 1))
    device = model.encoder.weights[0].device
    gen = torch.Generator().manual_seed(seed)
    recon, kl, nll, mu = [], [], [], []
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        terms = elbo(model, xb, generator=gen)
        recon.append(-terms.recon.cpu())
        kl.append(terms.kl.cpu())
        mu.append(terms.mu.cpu())
        if k:
            nll.append(-iwae_bound(model, xb, k, gen).cpu())
    model.train(was_training)
    active, _ = _count_active(torch.cat(mu), ACTIVE_THRESHOLD)
    recon, kl = torch.cat(recon).double(), torch.cat(kl).double()
    nll_all = torch.cat(nll).double() if k else None
    return Scores(neg_elbo=float((recon + kl).mean()), recon=float(recon.mean()),
                  kl=float(kl.mean()), nll=float(nll_all.mean()) if k else None, k=k,
                  active=active, n=len(x),
                  nll_sem=float(nll_all.std() / math.sqrt(len(x))) if k and len(x) > 1 else None)


# --- training --------------------------------------------------------------------------

@dataclass(frozen=True)
class KLSchedule:
    """The weight of the KL term during training, and free bits.

    The training loss of a batch ``B`` at update ``t`` (1, 2, ...) is

        -mean_B E_q log p(x | z) + β_t Σ_j max(λ, mean_B KL_j),

    with ``KL_j = KL(q(z_j | x) || N(0, 1))``:

    * ``beta``: the final weight ``β`` (1: the ELBO; above 1: the β-VAE of Higgins et al.
      2017; below 1: a weaker pull towards the prior);
    * ``warmup``: KL annealing (Bowman et al. 2016; the "warm-up" of Sønderby et al.
      2016), ``β_t = β min(1, t / warmup)`` rising linearly from 0 (0: no annealing);
    * ``free_bits``: ``λ`` nats per latent dimension (Kingma et al. 2016), below which a
      dimension's batch-mean KL costs nothing (a constant ``λ``), so the KL term does not
      push it further towards the prior (0: the plain sum ``Σ_j mean_B KL_j``).
    """

    beta: float = 1.0
    warmup: int = 0
    free_bits: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative int (updates), got {self.warmup!r}")
        if not (isinstance(self.free_bits, (int, float)) and self.free_bits >= 0):
            raise ValueError(f"free_bits must be >= 0 nats, got {self.free_bits!r}")

    def weight(self, step: int) -> float:
        """``β_t`` at update ``step`` (counted from 1)."""
        if self.warmup == 0:
            return float(self.beta)
        return float(self.beta) * min(1.0, step / self.warmup)

    def penalty(self, kl_per_dim: torch.Tensor, step: int) -> torch.Tensor:
        """``β_t Σ_j max(λ, mean_B KL_j)`` for the ``(n, d)`` KL terms of a batch."""
        if kl_per_dim.ndim != 2:
            raise ValueError(f"kl_per_dim must be (n, d), got {tuple(kl_per_dim.shape)}")
        per_dim = kl_per_dim.mean(0)
        if self.free_bits > 0:
            per_dim = per_dim.clamp_min(self.free_bits)
        return self.weight(step) * per_dim.sum()


@dataclass
class TrainRun:
    """What :func:`train` records, one value per epoch.

    ``loss``: the training loss (the schedule's weighted objective) averaged over the
    epoch's batches; ``neg_elbo``/``kl``: the unweighted ``-ELBO`` and KL on those batches;
    ``beta``: the KL weight at the epoch's last update; ``val_neg_elbo``, ``val_kl``,
    ``val_active``: measured on the validation images after the epoch (if given).
    """

    loss: list[float] = field(default_factory=list)
    neg_elbo: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    val_neg_elbo: list[float] = field(default_factory=list)
    val_kl: list[float] = field(default_factory=list)
    val_active: list[int] = field(default_factory=list)
    steps: int = 0


def train(model: VAE, images: torch.Tensor, *, epochs: int, batch_size: int = 100,
          lr: float = 1e-3, schedule: KLSchedule = KLSchedule(), val: torch.Tensor | None = None,
          dynamic: bool = True, seed: int = 0, device=None, progress: bool = True,
          desc: str = "training") -> TrainRun:
    """Train ``model`` with Adam on ``images`` ``(N, D)`` (or ``(N, 28, 28)``) for ``epochs``.

    ``dynamic=True``: the images are gray levels in ``[0, 1]`` and every batch is
    binarised afresh (:func:`binarize`), so the model never sees the same binary image
    twice; ``dynamic=False``: the images are already binary (static binarisation). Each
    update minimises the loss of :class:`KLSchedule` on one batch with one sample of
    ``z`` per image. The batch order, the binarisation and the noise come from one
    ``torch.Generator`` seeded with ``seed``; the initial weights are the caller's.
    ``val`` (binary) is scored after every epoch with :func:`evaluate` (``k = 0``).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        _check_samples(value, name)
    if not isinstance(schedule, KLSchedule):
        raise TypeError(f"schedule must be a KLSchedule, got {type(schedule).__name__}")
    images = _flat(images, model.config.x_dim, "images")
    if dynamic:
        if images.min() < 0 or images.max() > 1:
            raise ValueError("dynamic binarisation needs gray levels in [0, 1]")
    else:
        check_binary(images, "images")
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
    if val is not None:
        val = check_binary(_flat(val, model.config.x_dim, "val"), "val")
    device = torch.device(device if device is not None else model.encoder.weights[0].device)
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    # the fused kernel does the same update as the per-tensor loop, three times faster here
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))
    run = TrainRun()
    per_epoch = len(images) // batch_size
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(images), generator=gen)
        sums = torch.zeros(3, dtype=torch.float64)
        for b in range(per_epoch):
            xb = images[order[b * batch_size:(b + 1) * batch_size]]
            xb = (binarize(xb, generator=gen) if dynamic else xb).to(device)
            run.steps += 1
            terms = elbo(model, xb, generator=gen)
            loss = -terms.recon.mean() + schedule.penalty(terms.kl_per_dim, run.steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.tensor([loss.item(), -terms.elbo.mean().item(), terms.kl.mean().item()],
                                 dtype=torch.float64)
        for values, total in zip((run.loss, run.neg_elbo, run.kl), sums / per_epoch):
            values.append(float(total))
        run.beta.append(schedule.weight(run.steps))
        if val is not None:
            scores = evaluate(model, val, seed=seed)
            run.val_neg_elbo.append(scores.neg_elbo)
            run.val_kl.append(scores.kl)
            run.val_active.append(scores.active)
            model.train()
        post = {"-elbo": f"{run.neg_elbo[-1]:.1f}", "kl": f"{run.kl[-1]:.1f}"}
        if val is not None:
            post["val -elbo"] = f"{run.val_neg_elbo[-1]:.1f}"
        bar.set_postfix(post)
    model.eval()
    return run


# --- gradient estimators of ∇ E_q f(z) -------------------------------------------------

def _check_q(mu: torch.Tensor, logvar: torch.Tensor) -> None:
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    if mu.ndim != 1 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must be (d,) vectors of one shape, got "
                         f"{tuple(mu.shape)} and {tuple(logvar.shape)}")


def _values(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    out = f(z)
    if not isinstance(out, torch.Tensor) or out.shape != z.shape[:1]:
        raise ValueError(f"f must map samples (S, d) to values (S,), got "
                         f"{tuple(getattr(out, 'shape', ()))} for {tuple(z.shape)}")
    return out


def reparam_gradients(f: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor,
                      logvar: torch.Tensor, n_samples: int,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample reparameterisation estimates of ``∇_μ`` and ``∇_{log σ²}`` of ``E_q f(z)``.

    ``q = N(μ, diag σ²)`` with ``μ``, ``log σ²`` ``(d,)``; ``f`` maps ``(S, d)`` to
    ``(S,)`` row by row. With ``z_s = μ + σ ε_s``, the chain rule gives

        ∂f(z_s)/∂μ = ∇f(z_s),   ∂f(z_s)/∂log σ² = ∇f(z_s) ⊙ ε_s σ / 2.

    Returns the two ``(S, d)`` matrices of single-sample estimates; their mean over the
    ``S`` rows is the ``S``-sample estimate, their variance over rows its variance times
    ``S``.
    """
    _check_q(mu, logvar)
    _check_samples(n_samples, "n_samples")
    mu, logvar = mu.detach(), logvar.detach()
    eps = torch.randn((n_samples, mu.shape[0]), generator=generator).to(mu.device, mu.dtype)
    sigma = (0.5 * logvar).exp()
    z = (mu + sigma * eps).requires_grad_(True)
    with torch.enable_grad():
        (grad_z,) = torch.autograd.grad(_values(f, z).sum(), z)
    return grad_z, grad_z * eps * sigma / 2


@torch.no_grad()
def score_function_gradients(f: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor,
                             logvar: torch.Tensor, n_samples: int,
                             generator: torch.Generator | None = None,
                             baseline: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample score-function (REINFORCE, Williams 1992) estimates of the same gradients.

    ``∇ E_q f(z) = E_q[f(z) ∇ log q(z)]`` needs values of ``f`` only, no derivative. For
    ``z_s = μ + σ ε_s`` the scores are

        ∂ log q(z_s)/∂μ = ε_s / σ,   ∂ log q(z_s)/∂log σ² = (ε_s² - 1) / 2,

    and each row is ``(f(z_s) - b)`` times them; a constant ``baseline`` ``b`` leaves the
    mean unchanged (the scores have mean 0) and can lower the variance. Returns two
    ``(S, d)`` matrices, as :func:`reparam_gradients`.
    """
    _check_q(mu, logvar)
    _check_samples(n_samples, "n_samples")
    eps = torch.randn((n_samples, mu.shape[0]), generator=generator).to(mu.device, mu.dtype)
    sigma = (0.5 * logvar).exp()
    weight = (_values(f, mu + sigma * eps) - baseline)[:, None]
    return weight * eps / sigma, weight * (eps.square() - 1) / 2


# --- pictures of the latent space ------------------------------------------------------

def normal_grid(n: int, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """``(n * n, 2)`` points of a 2-D latent space on a grid of standard-normal quantiles.

    The levels ``Φ^{-1}(p)`` for ``n`` equally spaced ``p`` in ``[low, high]`` (Kingma &
    Welling's Figure 4): equal prior mass between neighbouring lines. Row-major, with the
    second coordinate decreasing down the rows, so a reshape to ``(n, n)`` reads like a plot.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not 0 < low < high < 1:
        raise ValueError(f"need 0 < low < high < 1, got {low}, {high}")
    levels = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(low, high, n))
    z2, z1 = torch.meshgrid(levels.flip(0), levels, indexing="ij")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)


@torch.no_grad()
def interpolate(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 9) -> torch.Tensor:
    """Decoder means ``(steps, D)`` along the line between the encoder means of two images.

    ``z_t = (1 - t) μ(x_a) + t μ(x_b)`` for ``steps`` equally spaced ``t`` in ``[0, 1]``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    device = model.encoder.weights[0].device
    pair = torch.cat([_flat(x_a.reshape(1, -1), model.config.x_dim, "x_a"),
                      _flat(x_b.reshape(1, -1), model.config.x_dim, "x_b")]).to(device)
    mu, _ = model.encode(pair)
    t = torch.linspace(0, 1, steps, device=device)[:, None]
    return model.probabilities((1 - t) * mu[0] + t * mu[1]).cpu()
