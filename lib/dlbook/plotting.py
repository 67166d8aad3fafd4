"""Figures in one style across the book: learning curves and small helpers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

# The book's column: a cell output is 676 px wide at a 1280 px window, and body text is
# 16 px (tests/test_book.py measures both in Chromium). A figure at most FIGURE_WIDTH
# inches wide at 100 dpi is shown unscaled, so MIN_FONT_PT points are drawn at
# 12 * 100 / 72 = 16.7 px: no text in a figure is smaller than the text around it.
DPI = 100
FIGURE_WIDTH = 6.6
MIN_FONT_PT = 12
# Inline figures are saved with a tight bounding box, so text outside the axes (a legend
# placed outside, a long title) widens the image beyond FIGURE_WIDTH. Chromium shows an
# image wider than the column scaled down; up to 4 % is tolerated (tests/test_book.py).
COLUMN_PX = 676
MAX_IMAGE_PX = int(1.04 * COLUMN_PX)

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": MIN_FONT_PT,
    "axes.titlesize": MIN_FONT_PT,
    "axes.labelsize": MIN_FONT_PT,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "legend.title_fontsize": MIN_FONT_PT,
    "figure.titlesize": MIN_FONT_PT + 1,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def use_book_style() -> None:
    """Apply the book's matplotlib settings (called by each notebook's setup).

    Every font is at least :data:`MIN_FONT_PT`; figures are meant to be at most
    :data:`FIGURE_WIDTH` inches wide (see :func:`figure_width`), so that their text
    reads at the size of the book's body text.
    """
    plt.rcParams.update(STYLE)


def figure_width(inches: float) -> float:
    """``inches`` capped at the book's column, :data:`FIGURE_WIDTH`."""
    return min(float(inches), FIGURE_WIDTH)


def plot_history(history, metrics: Sequence[str] = ("loss",), *, title: str | None = None,
                 axes=None, log_loss: bool = False):
    """Learning curves: one panel per metric, training and validation curves in each.

    ``history`` is a :class:`dlbook.training.History` (or a mapping of name to
    per-epoch list) holding ``train_<metric>`` and optionally ``val_<metric>``.
    Returns the array of axes.
    """
    values = history if isinstance(history, Mapping) else history.values
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not metrics:
        raise ValueError("plot_history needs at least one metric name")
    for m in metrics:
        if f"train_{m}" not in values and f"val_{m}" not in values:
            raise KeyError(f"no train_{m} or val_{m} in the history; it has {', '.join(values) or 'nothing'}")
    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(figure_width(3.3 * len(metrics)), 3.3), squeeze=False)
        axes = axes[0]
    for ax, m in zip(axes, metrics):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_{m}"
            if key in values:
                ys = values[key]
                ax.plot(range(1, len(ys) + 1), ys, style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        if log_loss and m == "loss":
            ax.set_yscale("log")
        ax.legend()
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


def plot_confusion(matrix, *, labels: Sequence[str] | None = None, ax=None, title: str = "confusion matrix"):
    """Draw a ``(C, C)`` confusion matrix (rows: true class, columns: predicted) with counts."""
    import numpy as np

    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {m.shape}")
    labels = list(labels) if labels is not None else [str(i) for i in range(m.shape[0])]
    if ax is None:
        _, ax = plt.subplots(figsize=(figure_width(0.6 * m.shape[0] + 1), 0.55 * m.shape[0] + 1))
    ax.imshow(m, cmap="Blues")
    ax.grid(False)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return ax


def show_images(images, titles: Sequence[str] | None = None, *, ncols: int = 8, cmap: str = "gray_r",
                size: float = 1.1, suptitle: str | None = None):
    """A grid of images ``(k, H, W)`` with optional titles; returns the figure."""
    import numpy as np

    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (k, H, W), got shape {images.shape}")
    k = images.shape[0]
    nrows = (k + ncols - 1) // ncols
    width = figure_width(size * ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, width / ncols * nrows * 1.25),
                             squeeze=False)
    for idx, ax in enumerate(axes.flat):
        ax.axis("off")
        if idx < k:
            ax.imshow(images[idx], cmap=cmap)
            if titles is not None:
                ax.set_title(titles[idx])
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def mosaic(images, ncols: int, pad: int = 1, fill: float = 0.0) -> np.ndarray:
    """One 2-D array tiling images ``(k, H, W)`` (or ``(k, H*W)`` square ones) in rows of
    ``ncols``, ``pad`` pixels of ``fill`` between them: draw it with a single ``imshow``.

    Image ``i`` sits in row ``i // ncols``, column ``i % ncols``; the last row is padded
    with ``fill`` (0: white under the book's ``gray_r`` colour map for digits).
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 2:
        side = int(round(images.shape[1] ** 0.5))
        if side * side != images.shape[1]:
            raise ValueError(f"flat images must be square, got {images.shape[1]} pixels")
        images = images.reshape(-1, side, side)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be (k, H, W) or (k, H*W) with k > 0, got {images.shape}")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    k, h, w = images.shape
    nrows = -(-k // ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), fill)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return out


def moving_average(values: Sequence[float], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The mean of every ``k`` consecutive values, for reading noisy per-step curves.

    Returns ``(steps, means)``: ``means[i]`` averages ``values[i : i+k]`` and is plotted
    at ``steps[i] = i + k - 1``, the last step it includes, so that the smoothed curve
    never runs ahead of the data. ``k`` is capped at ``len(values)``.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {values.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = min(k, len(values))
    means = np.convolve(values, np.ones(k) / k, mode="valid")
    return np.arange(k - 1, len(values)), means
