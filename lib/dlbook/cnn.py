"""Convolutional networks from scratch, and the small models of chapter 5.

Shapes follow PyTorch: images ``x`` are ``(n, c_in, H, W)``, filters ``w`` are
``(c_out, c_in, k_h, k_w)``, biases ``b`` are ``(c_out,)``. A convolutional layer
(a cross-correlation, as in every deep-learning library) computes

    y[i, o, p, q] = b[o] + sum_{c, u, v} w[o, c, u, v] * x_pad[i, c, s*p + u, s*q + v]

with stride ``s`` and ``x_pad`` the input with ``padding`` zeros on each side; the
output has ``H_out = (H + 2*padding - k_h) // s + 1`` rows (likewise columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check_image(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be (n, c, H, W), got shape {tuple(x.shape)}")


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length along one axis: ``(size + 2*padding - kernel) // stride + 1``."""
    if kernel < 1 or stride < 1 or padding < 0:
        raise ValueError(f"need kernel >= 1, stride >= 1, padding >= 0; got {kernel}, {stride}, {padding}")
    if size + 2 * padding < kernel:
        raise ValueError(f"a kernel of {kernel} does not fit in {size} + 2*{padding} positions")
    return (size + 2 * padding - kernel) // stride + 1


def _check_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int, padding: int):
    _check_image(x)
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError("w must be a (c_out, c_in, k_h, k_w) tensor")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but w expects {w.shape[1]}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"b must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    if not isinstance(stride, int) or not isinstance(padding, int):
        raise TypeError("stride and padding must be ints")
    h_out = output_size(x.shape[2], w.shape[2], stride, padding)
    w_out = output_size(x.shape[3], w.shape[3], stride, padding)
    return h_out, w_out


def conv2d_loops(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                 stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Convolution by a sliding window: one loop over the output positions ``(p, q)``.

    At each position the ``(n, c_in, k_h, k_w)`` patch is multiplied by every filter and
    summed: ``y[:, :, p, q] = einsum(patch, w) + b``. Returns ``(n, c_out, H_out, W_out)``.
    """
    h_out, w_out = _check_conv(x, w, b, stride, padding)
    k_h, k_w = w.shape[2], w.shape[3]
    xp = F.pad(x, (padding, padding, padding, padding))
    y = x.new_zeros(x.shape[0], w.shape[0], h_out, w_out)
    for p in range(h_out):
        for q in range(w_out):
            patch = xp[:, :, p * stride:p * stride + k_h, q * stride:q * stride + k_w]
            y[:, :, p, q] = torch.einsum("ncuv,ocuv->no", patch, w)
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def im2col(x: torch.Tensor, k_h: int, k_w: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Unfold every ``k_h x k_w`` patch into a column: ``(n, c*k_h*k_w, H_out*W_out)``.

    Column ``l = p*W_out + q`` holds the patch under output position ``(p, q)``, its
    entries ordered ``(c, u, v)`` like a flattened filter ``w[o].reshape(-1)``.
    """
    _check_image(x)
    h_out = output_size(x.shape[2], k_h, stride, padding)
    w_out = output_size(x.shape[3], k_w, stride, padding)
    xp = F.pad(x, (padding, padding, padding, padding))
    n, c = x.shape[:2]
    cols = x.new_empty(n, c, k_h, k_w, h_out, w_out)
    for u in range(k_h):          # loops over the kernel offsets only: k_h * k_w strided copies
        for v in range(k_w):
            cols[:, :, u, v] = xp[:, :, u:u + stride * (h_out - 1) + 1:stride,
                                  v:v + stride * (w_out - 1) + 1:stride]
    return cols.reshape(n, c * k_h * k_w, h_out * w_out)


def conv2d_im2col(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                  stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Convolution as one matrix product: ``Y = W_mat @ im2col(x) + b``.

    ``W_mat`` is ``(c_out, c_in*k_h*k_w)``; the product is ``(n, c_out, H_out*W_out)``,
    reshaped to ``(n, c_out, H_out, W_out)``.
    """
    h_out, w_out = _check_conv(x, w, b, stride, padding)
    cols = im2col(x, w.shape[2], w.shape[3], stride, padding)
    y = w.reshape(w.shape[0], -1) @ cols
    if b is not None:
        y = y + b[None, :, None]
    return y.reshape(x.shape[0], w.shape[0], h_out, w_out)


def max_pool2d(x: torch.Tensor, kernel: int, stride: int | None = None) -> torch.Tensor:
    """Max pooling: the largest value of each ``kernel x kernel`` window (stride defaults to kernel).

    ``(n, c, H, W) -> (n, c, H_out, W_out)``, computed from the same unfolded patches as im2col.
    """
    _check_image(x)
    stride = kernel if stride is None else stride
    n, c, height, width = x.shape
    h_out, w_out = output_size(height, kernel, stride), output_size(width, kernel, stride)
    cols = im2col(x.reshape(n * c, 1, height, width), kernel, kernel, stride)
    return cols.amax(dim=1).reshape(n, c, h_out, w_out)


def conv_params(c_in: int, c_out: int, kernel: int, bias: bool = True) -> int:
    """Number of parameters of a ``kernel x kernel`` convolution: ``c_out*(c_in*k*k + bias)``."""
    if min(c_in, c_out, kernel) < 1:
        raise ValueError("c_in, c_out and kernel must be positive")
    return c_out * (c_in * kernel * kernel + int(bias))


def receptive_field(kernels: Sequence[int], strides: Sequence[int] | None = None) -> int:
    """Receptive field of a stack of convolutions/poolings: ``r = 1 + sum_l (k_l - 1) * prod_{j<l} s_j``."""
    strides = [1] * len(kernels) if strides is None else list(strides)
    if len(strides) != len(kernels):
        raise ValueError("kernels and strides must have the same length")
    r, jump = 1, 1
    for k, s in zip(kernels, strides):
        if k < 1 or s < 1:
            raise ValueError("kernels and strides must be positive")
        r += (k - 1) * jump
        jump *= s
    return r


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Total number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class LeNet(nn.Module):
    """A LeNet-5-style network for ``(n, 1, 28, 28)`` digits.

    conv 5x5 (1 -> c1, padding 2) -> act -> max-pool 2 -> conv 5x5 (c1 -> c2) -> act ->
    max-pool 2 -> flatten (c2*5*5) -> linear -> act -> [dropout] -> linear (classes).
    ``layers()`` lists the four weight layers in order (used to freeze the first k).
    """

    def __init__(self, c1: int = 6, c2: int = 16, hidden: int = 64, classes: int = 10,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc1 = nn.Linear(c2 * 5 * 5, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.drop = nn.Dropout(dropout)

    def layers(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.fc1, self.fc2]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each conv block: ``(n, c1, 14, 14)`` and ``(n, c2, 5, 5)``."""
        if x.ndim == 3:
            x = x[:, None]
        _check_image(x)
        a1 = F.max_pool2d(self.act(self.conv1(x)), 2)
        a2 = F.max_pool2d(self.act(self.conv2(a1)), 2)
        return [a1, a2]

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden layer's activations ``act(fc1(flatten(·)))``: ``(n, hidden)``."""
        return self.act(self.fc1(self.features(x)[-1].flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.penultimate(x)))


def freeze_first(model: LeNet, k: int) -> None:
    """Freeze (``requires_grad=False``) the first ``k`` weight layers of ``model.layers()``."""
    layers = model.layers()
    if not 0 <= k <= len(layers):
        raise ValueError(f"k must lie in [0, {len(layers)}], got {k}")
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            p.requires_grad_(i >= k)


class Inception(nn.Module):
    """An Inception block (GoogLeNet): four parallel branches concatenated along channels.

    1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1; every branch keeps ``H x W``, so
    ``(n, c_in, H, W) -> (n, c1 + c3 + c5 + cp, H, W)``.
    """

    def __init__(self, c_in: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, cp: int):
        super().__init__()
        if min(c_in, c1, c3_reduce, c3, c5_reduce, c5, cp) < 1:
            raise ValueError("all channel counts must be positive")
        self.b1 = nn.Conv2d(c_in, c1, 1)
        self.b3 = nn.Sequential(nn.Conv2d(c_in, c3_reduce, 1), nn.ReLU(), nn.Conv2d(c3_reduce, c3, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(c_in, c5_reduce, 1), nn.ReLU(), nn.Conv2d(c5_reduce, c5, 5, padding=2))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(c_in, cp, 1))

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_image(x)
        return [F.relu(b(x)) for b in (self.b1, self.b3, self.b5, self.bp)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(x), dim=1)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions of ``width`` channels; ``residual=True`` adds the identity shortcut.

    plain: ``relu(conv2(relu(conv1(x))))``; residual: ``relu(x + conv2(relu(conv1(x))))``
    (He et al. 2016). Shapes ``(n, width, H, W) -> (n, width, H, W)``.
    """

    def __init__(self, width: int, residual: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x)))
        return F.relu(x + h if self.residual else h)


class DeepConvNet(nn.Module):
    """Stem conv (1 -> width) + ``blocks`` ConvBlocks + global average pool + linear head.

    Depth in weight layers: ``2 * blocks + 2``. Input ``(n, 1, H, W)`` or ``(n, H, W)``.
    """

    def __init__(self, blocks: int, width: int = 16, classes: int = 10, residual: bool = False):
        super().__init__()
        if blocks < 0 or width < 1:
            raise ValueError(f"need blocks >= 0 and width >= 1, got {blocks}, {width}")
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.body = nn.Sequential(*[ConvBlock(width, residual) for _ in range(blocks)])
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        _check_image(x)
        h = self.body(F.relu(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


def scaled_convnet_cost(depth: float = 1.0, width: float = 1.0, resolution: float = 1.0,
                        base_layers: int = 8, base_width: int = 32, base_resolution: int = 64,
                        c_in: int = 3, kernel: int = 3) -> tuple[int, int]:
    """Parameters and multiply-adds (FLOPs/2) of a plain conv net scaled by the three multipliers.

    The base net is ``base_layers`` 3x3 convolutions of ``base_width`` channels on
    ``base_resolution`` pixels square (no pooling). Scaling: layers ``ceil(d*L)``,
    channels ``ceil(w*C)``, resolution ``ceil(r*R)``. Per layer, parameters
    ``c_out*(c_in*k^2 + 1)`` and multiply-adds ``c_out*c_in*k^2*H*W``; so multiply-adds
    grow like ``d * w^2 * r^2`` (Tan & Le 2019).
    """
    if min(depth, width, resolution) <= 0:
        raise ValueError("the multipliers must be positive")
    layers = math.ceil(depth * base_layers - 1e-9)
    channels = math.ceil(width * base_width - 1e-9)
    res = math.ceil(resolution * base_resolution - 1e-9)
    params = macs = 0
    c = c_in
    for _ in range(layers):
        params += conv_params(c, channels, kernel)
        macs += channels * c * kernel * kernel * res * res
        c = channels
    return params, macs


def compound_multipliers(phi: float, alpha: float = 1.2, beta: float = 1.1,
                         gamma: float = 1.15) -> tuple[float, float, float]:
    """EfficientNet's compound scaling: depth ``alpha**phi``, width ``beta**phi``, resolution ``gamma**phi``.

    With ``alpha * beta**2 * gamma**2 ~= 2`` the cost grows by about ``2**phi``.
    """
    if min(alpha, beta, gamma) < 1:
        raise ValueError("alpha, beta and gamma must be >= 1")
    return alpha ** phi, beta ** phi, gamma ** phi


class RandomIntensity(nn.Module):
    """Intensity augmentation: in training, multiply each image by its own factor in ``[low, high]``.

    ``(n, ...) -> (n, ...)``; the identity in eval mode (AlexNet altered intensities too).
    """

    def __init__(self, low: float = 0.6, high: float = 1.4):
        super().__init__()
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, got {low}, {high}")
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        factor = torch.empty(x.shape[0], device=x.device).uniform_(self.low, self.high)
        return x * factor.reshape(-1, *[1] * (x.ndim - 1))
