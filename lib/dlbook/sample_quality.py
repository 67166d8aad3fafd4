"""One yardstick for generated digits, shared by the GAN, VAE and diffusion chapters.

The Inception network behind the usual FID cannot be downloaded here, so the book
measures generated MNIST-like images with its own LeNet-style classifier
(:class:`dlbook.cnn.LeNet`, chapter 05), trained once on MNIST's 60,000 training images,
deterministically on the CPU, and cached under the cache root (``DLBOOK_CACHE``):

* the **Fréchet distance on LeNet features** (the FID formula of Heusel et al. 2017 on
  this network's 64 penultimate features; *not* comparable with published FIDs)

  .. math:: d^2 = \\lVert \\mu_r - \\mu_g \\rVert^2
            + \\operatorname{Tr}\\bigl(\\Sigma_r + \\Sigma_g - 2 (\\Sigma_r \\Sigma_g)^{1/2}\\bigr),

  with means ``μ`` and covariances ``Σ`` of the features of real (r) and generated (g)
  images;
* the classifier's **label histogram** of the samples (class coverage) and its **mean
  confidence** (mean of the largest softmax probability).

Images are ``(n, 1, 28, 28)`` or ``(n, 28, 28)`` floats in ``[0, 1]`` (MNIST's pixels / 255).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cnn import LeNet
from .data import cache_root, load_mnist
from .training import batches, fit

VERSION = "lenet-mnist-v1"       # change when the recipe changes: the cache file is named by it
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class YardstickConfig:
    """The training recipe of the yardstick classifier (Adam, cross-entropy, CPU)."""
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    hidden: int = 64


def check_images(images: torch.Tensor) -> torch.Tensor:
    """``(n, 1, 28, 28)`` float images in ``[0, 1]``; ``(n, 28, 28)`` gets its channel axis."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must have shape (n, 1, 28, 28) or (n, 28, 28), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1] (pixels / 255), got dtype {images.dtype}")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(f"images must lie in [0, 1], got values in [{float(images.min()):.3g}, "
                         f"{float(images.max()):.3g}] (rescale, e.g. (x + 1) / 2 from [-1, 1])")
    return images


class DigitYardstick(nn.Module):
    """A trained LeNet that scores ``[0, 1]`` images: features, probabilities, statistics."""

    def __init__(self, net: LeNet):
        super().__init__()
        self.net = net.eval()

    def _batches(self, images: torch.Tensor, batch_size: int):
        images = check_images(images)
        device = next(self.net.parameters()).device
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device, torch.float32)
            yield (x - MNIST_MEAN) / MNIST_STD

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate activations ``ReLU(fc1(·))``: ``(n, hidden)`` float64 on the CPU."""
        out = [self.net.penultimate(x).double().cpu() for x in self._batches(images, batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.net.fc1.out_features, dtype=torch.float64)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Softmax outputs ``(n, 10)`` on the CPU."""
        return torch.cat([F.softmax(self.net(x), 1).cpu() for x in self._batches(images, batch_size)])

    def frechet_distance(self, real: torch.Tensor, generated: torch.Tensor) -> float:
        """Fréchet distance on LeNet features between two sets of images (see module)."""
        return frechet_distance(*gaussian_statistics(self.features(real)),
                                *gaussian_statistics(self.features(generated)))

    def class_histogram(self, images: torch.Tensor) -> torch.Tensor:
        """How many images the classifier assigns to each digit: ``(10,)`` int64."""
        return torch.bincount(self.probabilities(images).argmax(1), minlength=10)

    def mean_confidence(self, images: torch.Tensor) -> float:
        """Mean over images of the largest class probability."""
        return float(self.probabilities(images).max(1).values.mean())

    def report(self, generated: torch.Tensor, real: torch.Tensor) -> dict:
        """Fréchet distance to ``real``, class histogram and coverage, mean confidence."""
        hist = self.class_histogram(generated)
        return {"frechet": self.frechet_distance(real, generated), "histogram": hist.tolist(),
                "classes_covered": int((hist > 0).sum()), "confidence": self.mean_confidence(generated)}


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``(n, d)`` features, float64.

    Needs ``n > d``: with fewer samples the covariance is singular and the distance is
    dominated by the estimate's noise.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ValueError(f"features must be a 2-D tensor (n, d), got {getattr(features, 'shape', features)}")
    n, d = features.shape
    if n <= d:
        raise ValueError(f"{n} samples are too few for the covariance of {d} features: need more than {d}")
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (n - 1)


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` for symmetric PSD ``Σ``.

    ``Tr((Σ1 Σ2)^{1/2})`` is computed as the sum of the square roots of the eigenvalues of
    the symmetric matrix ``Σ1^{1/2} Σ2 Σ1^{1/2}``, which is similar to ``Σ1 Σ2``: no
    general (non-symmetric) matrix square root is needed.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (*mu1.shape, *mu1.shape):
        raise ValueError(f"shapes do not match: mu {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
                         f"sigma {tuple(sigma1.shape)}, {tuple(sigma2.shape)}")
    root = _psd_sqrt(sigma1)
    middle = root @ sigma2 @ root
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_sqrt)


def train_yardstick(images: np.ndarray, labels: np.ndarray,
                    config: YardstickConfig = YardstickConfig(), progress: bool = True) -> DigitYardstick:
    """Train the yardstick LeNet on uint8 images ``(n, 28, 28)`` and labels ``(n,)`` with
    :func:`dlbook.training.fit`.

    Deterministic: one CPU thread, ``config.seed`` for the initialisation and the order
    of the mini-batches; the same inputs give the same weights on the same kind of
    processor with the same torch version. Processors whose float32 kernels round
    differently give slightly different weights (test accuracy 0.9808 on one machine of
    this project, 0.9810 on another), so notebooks compare no yardstick number with nbval.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.seed)
        net = LeNet(hidden=config.hidden)
        x = (torch.as_tensor(images, dtype=torch.float32)[:, None] / 255 - MNIST_MEAN) / MNIST_STD
        y = torch.as_tensor(labels, dtype=torch.int64)
        loader = batches(x, y, config.batch_size, shuffle=True,
                         generator=torch.Generator().manual_seed(config.seed))
        fit(net, loader, F.cross_entropy, torch.optim.Adam(net.parameters(), lr=config.lr),
            config.epochs, device="cpu", progress=progress, desc="training the yardstick LeNet")
    finally:
        torch.set_num_threads(threads)
    return DigitYardstick(net)


def yardstick_path(cache: str | Path | None = None) -> Path:
    return Path(cache or cache_root()) / "yardstick" / f"{VERSION}.pt"


def load_yardstick(cache: str | Path | None = None, device: str | torch.device = "cpu",
                   progress: bool = True) -> DigitYardstick:
    """The yardstick, trained on MNIST's training split on first use and cached.

    The cache file (``<cache root>/yardstick/lenet-mnist-v1.pt``) holds the weights, the
    recipe and the test accuracy; later calls load it in well under a second.
    """
    path = yardstick_path(cache)
    config = YardstickConfig()
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("config") != asdict(config):
            raise ValueError(f"{path} was trained with {saved.get('config')}, not {asdict(config)}: "
                             "delete it to retrain")
        net = LeNet(hidden=config.hidden)
        net.load_state_dict(saved["state_dict"])
        stick = DigitYardstick(net)
    else:
        stick = train_yardstick(*load_mnist("train"), config, progress=progress)
        test_x, test_y = load_mnist("test")
        acc = accuracy_on(stick, test_x, test_y)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": stick.net.state_dict(), "config": asdict(config),
                    "test_accuracy": acc}, tmp)
        tmp.replace(path)
    return stick.to(device)


def saved_test_accuracy(cache: str | Path | None = None) -> float:
    """The test accuracy stored with the cached yardstick (computed when it was trained)."""
    return float(torch.load(yardstick_path(cache), map_location="cpu", weights_only=True)["test_accuracy"])


def accuracy_on(stick: DigitYardstick, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the yardstick on uint8 images ``(n, 28, 28)``."""
    probs = stick.probabilities(torch.as_tensor(images, dtype=torch.float32) / 255)
    return float((probs.argmax(1) == torch.as_tensor(labels)).float().mean())


def real_floor(stick: DigitYardstick, images: torch.Tensor, seed: int = 0) -> float:
    """Fréchet distance between two disjoint random halves of the same real images: the
    value a perfect generator would get with this many samples (the yardstick's floor)."""
    images = check_images(images)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    half = len(images) // 2
    return stick.frechet_distance(images[order[:half]], images[order[half:2 * half]])
