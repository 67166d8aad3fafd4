"""Image helpers shared by the chapters on digits and CNNs.

Images are tensors of shape ``(n, H, W)`` (one channel) or ``(n, c, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn


def crop(images: torch.Tensor, size: int, top: torch.Tensor | int, left: torch.Tensor | int) -> torch.Tensor:
    """Cut a ``size x size`` window from each image; ``top``/``left`` are ints or ``(n,)`` offsets.

    ``images``: ``(n, H, W)`` or ``(n, c, H, W)``; returns ``(n, size, size)`` or ``(n, c, size, size)``.
    """
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (n, H, W) or (n, c, H, W), got shape {tuple(images.shape)}")
    n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    top = torch.as_tensor(top, device=images.device).expand(n)
    left = torch.as_tensor(left, device=images.device).expand(n)
    if size < 1 or (top < 0).any() or (left < 0).any() or (top + size > height).any() or (left + size > width).any():
        raise ValueError(f"a {size}x{size} window at the given offsets does not fit in {height}x{width} images")
    steps = torch.arange(size, device=images.device)
    rows = (top[:, None] + steps)[:, :, None]          # (n, size, 1)
    cols = (left[:, None] + steps)[:, None, :]         # (n, 1, size)
    batch = torch.arange(n, device=images.device)[:, None, None]
    if images.ndim == 3:
        return images[batch, rows, cols]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


class ShiftCrop(nn.Module):
    """Crop a ``size x size`` window: centred in eval mode, shifted at random in training.

    In training each image gets its own offset, up to ``max_shift`` pixels from the
    centre in each direction: a cheap translation augmentation. ``max_shift=0``
    always takes the centre.
    """

    def __init__(self, size: int, max_shift: int = 0):
        super().__init__()
        if size < 1 or max_shift < 0:
            raise ValueError(f"need size >= 1 and max_shift >= 0, got {size}, {max_shift}")
        self.size, self.max_shift = size, max_shift

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        top0, left0 = (height - self.size) // 2, (width - self.size) // 2
        if min(top0, left0) < self.max_shift:
            raise ValueError(f"{height}x{width} images leave no room for a {self.size}x{self.size} window "
                             f"shifted by {self.max_shift}")
        if not self.training or self.max_shift == 0:
            return crop(images, self.size, top0, left0)
        n = images.shape[0]
        shift = lambda: torch.randint(-self.max_shift, self.max_shift + 1, (n,), device=images.device)
        return crop(images, self.size, top0 + shift(), left0 + shift())

    def extra_repr(self) -> str:
        return f"size={self.size}, max_shift={self.max_shift}"
