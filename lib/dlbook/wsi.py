"""Whole-slide-image classification with graphs (Baggag & Saad §5.6), on synthetic slides.

The pipeline of the section, step by step:

1. a slide ``(3, H, W)`` is cut into non-overlapping ``p x p`` patches (:func:`tile`);
   patches that are mostly glass are dropped (:func:`tissue_patches`);
2. a small residual CNN (:class:`PatchResNet`, He et al.) embeds each patch as a row
   ``x_i`` of ``X (n, d)``;
3. the patches are the nodes of a graph whose edges join grid neighbours
   (:func:`patch_graph`); GCN layers ``Â X W`` (5.4) mix neighbouring patches;
4. min-cut pooling (footnote 8 of the section; Bianchi et al. 2020) assigns the nodes
   softly to K clusters, ``S = softmax(MLP(X))`` ``(n, K)``, and coarsens the graph,

       X_pool = S^T X  (K, d),        A_pool = S^T A S  (K, K),

   trained with the min-cut loss ``-tr(S^T A S) / tr(S^T D S)`` and the orthogonality
   loss ``|| S^T S / ||S^T S||_F - I_K / sqrt(K) ||_F``;
5. a graph transformer (:mod:`dlbook.graph_transformer`) runs on the K clusters and
   their mean gives the slide's label.

The slides are generated here (:func:`synthetic_slide`): pink "stroma" with small
purple nuclei, and, on tumour slides, a region where nuclei are larger, denser and
darker. They imitate the look of H&E-stained tissue only loosely; no real patient data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import graphs
from .cnn import ConvBlock
from .graph_transformer import GTLayer

__all__ = ["synthetic_slide", "make_slides", "tile", "tissue_patches", "patch_graph", "mincut_pool",
           "MinCutPool", "PatchResNet", "DenseGCN", "SlideGraphTransformer", "pad_graphs"]

BACKGROUND = torch.tensor([0.95, 0.94, 0.95])
STROMA = torch.tensor([0.92, 0.62, 0.76])
TUMOUR_STROMA = torch.tensor([0.80, 0.50, 0.70])
NUCLEUS = torch.tensor([0.33, 0.18, 0.52])


def _blobs(size: int, n: int, radius: tuple[float, float], g: torch.Generator,
           centre_box: tuple[float, float] = (0.2, 0.8)) -> torch.Tensor:
    """Sum of n Gaussian bumps on a ``size x size`` grid (a smooth random field)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    field = torch.zeros(size, size)
    lo, hi = centre_box
    for _ in range(n):
        cy, cx = (lo + (hi - lo) * torch.rand(2, generator=g)) * size
        r = radius[0] + (radius[1] - radius[0]) * float(torch.rand(1, generator=g))
        field += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return field


def _discs(points: torch.Tensor, radius: float) -> torch.Tensor:
    """Stamp a disc of ``radius`` pixels on every True pixel of ``points`` (H, W) -> [0, 1]."""
    r = math.ceil(radius)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    kernel = ((yy ** 2 + xx ** 2) <= radius ** 2 + 0.25).float()[None, None]
    return F.conv2d(points.float()[None, None], kernel, padding=r)[0, 0].clamp(max=1.0)


def synthetic_slide(size: int = 128, tumour: bool = True, generator: torch.Generator | None = None,
                    aggregates: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One synthetic slide: ``(image (3, size, size) in [0, 1], tissue (size, size) bool,
    tumour (size, size) bool)``.

    The tissue is a thresholded sum of random Gaussian bumps; normal tissue has sparse
    small nuclei (radius 1) on pink stroma. A tumour slide has one region, a few bumps
    of random size inside the tissue, with dense, large (radius 2), dark nuclei on a
    darker stroma. The tumour mask of a normal slide is all False. Every slide also
    gets up to ``aggregates`` (a random number from 0 to ``aggregates``) small
    "lymphocyte aggregates": spots of densely packed *small* nuclei, a distractor that
    is dark and crowded like tumour but is not tumour.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    g = generator
    tissue = _blobs(size, 4, (0.12 * size, 0.22 * size), g) > 0.6
    tum = torch.zeros(size, size, dtype=torch.bool)
    if tumour:
        ys, xs = torch.nonzero(tissue, as_tuple=True)
        j = int(torch.randint(0, len(ys), (1,), generator=g))
        cy, cx = float(ys[j]) / size, float(xs[j]) / size
        r = 0.035 + 0.085 * float(torch.rand(1, generator=g))
        # three bumps of width r * size near the chosen tissue pixel
        yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                                torch.arange(size, dtype=torch.float32), indexing="ij")
        field = torch.zeros(size, size)
        for _ in range(3):
            oy, ox = (torch.rand(2, generator=g) - 0.5) * r * size
            field += torch.exp(-((yy - cy * size - oy) ** 2 + (xx - cx * size - ox) ** 2) / (2 * (r * size) ** 2))
        tum = (field > 0.5) & tissue
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    spots = torch.zeros(size, size, dtype=torch.bool)
    ys, xs = torch.nonzero(tissue, as_tuple=True)
    for _ in range(int(torch.randint(0, aggregates + 1, (1,), generator=g))):
        j = int(torch.randint(0, len(ys), (1,), generator=g))
        r = (0.03 + 0.03 * float(torch.rand(1, generator=g))) * size
        spots |= (yy - ys[j]) ** 2 + (xx - xs[j]) ** 2 <= r * r
    spots &= tissue & ~tum
    noise = torch.rand(size, size, generator=g)
    normal_nuclei = _discs(((noise < 0.012) | ((noise > 1 - 0.10) & spots)) & tissue & ~tum, 1.0)
    tumour_nuclei = _discs((noise > 1 - 0.035) & tum, 2.0)
    nuclei = torch.maximum(normal_nuclei, tumour_nuclei)
    stroma = torch.where(tum[None], TUMOUR_STROMA[:, None, None], STROMA[:, None, None])
    img = torch.where(tissue[None], stroma * (1 - nuclei) + NUCLEUS[:, None, None] * nuclei,
                      BACKGROUND[:, None, None].expand(3, size, size))
    img = img + 0.03 * torch.randn(3, size, size, generator=g)
    return img.clamp(0, 1), tissue, tum


def tile(image: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut ``image`` ``(C, H, W)`` into non-overlapping ``patch x patch`` tiles.

    Returns ``(H/p * W/p, C, p, p)`` in row-major order: tile ``r * (W/p) + c`` covers
    rows ``r p .. r p + p - 1`` and columns ``c p .. c p + p - 1``. H and W must be
    multiples of ``patch``.
    """
    if image.dim() != 3:
        raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
    c, h, w = image.shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {h} x {w}")
    t = image.unfold(1, patch, patch).unfold(2, patch, patch)         # (C, H/p, W/p, p, p)
    return t.permute(1, 2, 0, 3, 4).reshape(-1, c, patch, patch)


def tissue_patches(mask: torch.Tensor, patch: int, min_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of ``mask`` ``(H, W)`` inside each tile, and the tiles' grid coordinates.

    Returns ``fraction`` ``(H/p * W/p,)`` in the order of :func:`tile` and ``coords``
    ``(H/p * W/p, 2)`` (row, column). Use ``fraction >= min_fraction`` to keep tiles.
    """
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    frac = tile(mask.float()[None], patch).mean(dim=(1, 2, 3))
    rows, cols = mask.shape[0] // patch, mask.shape[1] // patch
    coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    return frac, coords


def patch_graph(coords: torch.Tensor, neighbours: int = 8) -> torch.Tensor:
    """Edge index ``(2, E)`` joining tiles that touch on the grid (both directions).

    ``coords`` ``(n, 2)`` integer (row, column) of the kept tiles. ``neighbours=4``
    joins tiles sharing a side, ``8`` also those sharing a corner.
    """
    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
    if coords.dim() != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (n, 2), got {tuple(coords.shape)}")
    diff = (coords[:, None, :] - coords[None, :, :]).abs()
    cheb, manh = diff.max(-1).values, diff.sum(-1)
    near = (cheb == 1) if neighbours == 8 else (manh == 1)
    j, i = torch.nonzero(near, as_tuple=True)
    return torch.stack([j, i])


def make_slides(n_slides: int, size: int = 128, patch: int = 16, min_fraction: float = 0.5,
                tumour_fraction: float = 0.5, generator: torch.Generator | None = None) -> list[dict]:
    """``n_slides`` synthetic slides, tiled. Slide i has label 1 (tumour) with probability
    ``tumour_fraction``. Each entry holds ``image``, ``tissue``, ``tumour`` (pixels),
    ``label`` (int), and for the kept tiles ``patches (n, 3, p, p)``, ``coords (n, 2)``,
    ``tumour_fraction (n,)`` and ``edge_index`` (8-neighbour :func:`patch_graph`).
    """
    out = []
    for _ in range(n_slides):
        label = int(torch.rand(1, generator=generator) < tumour_fraction)
        img, tissue, tum = synthetic_slide(size, bool(label), generator)
        frac, coords = tissue_patches(tissue, patch)
        keep = frac >= min_fraction
        tfrac, _ = tissue_patches(tum, patch)
        out.append(dict(image=img, tissue=tissue, tumour=tum, label=label,
                        patches=tile(img, patch)[keep], coords=coords[keep], tumour_fraction=tfrac[keep],
                        edge_index=patch_graph(coords[keep])))
    return out


# ---------------------------------------------------------------------------
# The patch encoder: a small ResNet

class PatchResNet(nn.Module):
    """A small residual CNN for ``(B, 3, p, p)`` patches.

    stem ``Conv3x3(3 -> width) + ReLU + MaxPool2``, ``blocks`` residual blocks
    (:class:`dlbook.cnn.ConvBlock`, ``relu(x + conv(relu(conv(x))))``), global average
    pooling and a linear map to ``d_embed``: :meth:`embed` returns ``(B, d_embed)``;
    forward adds a ReLU and a linear head with ``classes`` scores (patch labels).
    """

    def __init__(self, width: int = 16, blocks: int = 2, d_embed: int = 32, classes: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(*[ConvBlock(width, residual=True) for _ in range(blocks)])
        self.proj = nn.Linear(width, d_embed)
        self.head = nn.Linear(d_embed, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"patches must have shape (B, 3, p, p), got {tuple(x.shape)}")
        return self.proj(self.body(self.stem(x)).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.embed(x)))


# ---------------------------------------------------------------------------
# Min-cut pooling

def mincut_pool(x: torch.Tensor, adj: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None,
                normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-cut pooling (Bianchi et al. 2020) from scores ``s``, dense and batched.

    x ``(B, n, d)``, adj ``(B, n, n)``, s ``(B, n, K)`` *unnormalised* cluster scores
    (2-D inputs are one graph); mask ``(B, n)`` bool marks real nodes of padded graphs.
    With ``S = softmax(s)`` (rows; zero rows for padding):

    * ``X_pool = S^T X`` ``(B, K, d)`` and ``A_pool = S^T A S`` ``(B, K, K)``;
    * min-cut loss ``L_c = -tr(S^T A S) / tr(S^T D S)`` (D the degree matrix of A),
      small when the clusters cut few edges;
    * orthogonality loss ``L_o = || S^T S / ||S^T S||_F - I_K / sqrt(K) ||_F``, small
      when the clusters are of similar size and the assignments are crisp;

    both averaged over the batch. With ``normalize`` (as in PyG's
    ``dense_mincut_pool``) the diagonal of ``A_pool`` (edges inside a cluster) is
    zeroed and the result is normalised to ``D_p^{-1/2} A_pool D_p^{-1/2}``.
    Returns ``(X_pool, A_pool, L_c, L_o)``.
    """
    if x.dim() == 2:
        x, adj, s = x[None], adj[None], s[None]
        mask = None if mask is None else mask[None]
    if x.dim() != 3 or adj.dim() != 3 or s.dim() != 3:
        raise ValueError(f"need x (B, n, d), adj (B, n, n), s (B, n, K); got {tuple(x.shape)}, "
                         f"{tuple(adj.shape)}, {tuple(s.shape)}")
    b, n, _ = x.shape
    if adj.shape != (b, n, n) or s.shape[:2] != (b, n):
        raise ValueError(f"shapes disagree: x {tuple(x.shape)}, adj {tuple(adj.shape)}, s {tuple(s.shape)}")
    k = s.shape[-1]
    if k < 2:
        raise ValueError(f"min-cut pooling needs at least 2 clusters, got K={k}")
    S = torch.softmax(s, dim=-1)
    if mask is not None:
        if mask.shape != (b, n):
            raise ValueError(f"mask must have shape {(b, n)}, got {tuple(mask.shape)}")
        m = mask.to(x.dtype)[..., None]
        x, S = x * m, S * m
    st = S.transpose(1, 2)
    x_pool = st @ x
    a_pool = st @ adj @ S
    deg = adj.sum(-1)                                                  # (B, n)
    cut = -torch.diagonal(a_pool, dim1=1, dim2=2).sum(-1) / (st * deg[:, None, :] @ S).diagonal(
        dim1=1, dim2=2).sum(-1)
    sts = st @ S
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    ortho = torch.linalg.matrix_norm(sts / torch.linalg.matrix_norm(sts, keepdim=True) - eye / math.sqrt(k))
    if normalize:
        a_pool = a_pool * (1 - eye)
        d = a_pool.sum(-1).sqrt() + 1e-15                              # (B, K)
        a_pool = a_pool / d[:, :, None] / d[:, None, :]
    return x_pool, a_pool, cut.mean(), ortho.mean()


class MinCutPool(nn.Module):
    """Cluster scores from a two-layer MLP, then :func:`mincut_pool`.

    forward(x ``(B, n, d)``, adj ``(B, n, n)``, mask) -> ``(X_pool, A_pool, L_c, L_o, S)``
    with ``S = softmax(MLP(X))`` ``(B, n, K)`` the soft assignment (zero on padding).
    """

    def __init__(self, d: int, k: int, hidden: int = 32):
        super().__init__()
        if k < 2:
            raise ValueError(f"need at least 2 clusters, got {k}")
        self.k = k
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))

    def forward(self, x, adj, mask=None):
        s = self.mlp(x)
        xp, ap, lc, lo = mincut_pool(x, adj, s, mask)
        S = torch.softmax(s, -1)
        if mask is not None:
            S = S * mask[..., None].to(S.dtype)
        return xp, ap, lc, lo, S


# ---------------------------------------------------------------------------
# The slide model

def pad_graphs(xs: list[torch.Tensor], edge_indices: list[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad B graphs to a dense batch: ``x (B, N, d)``, ``adj (B, N, N)`` (0/1),
    ``a_hat (B, N, N)`` (Â of (5.2) per graph, zero on padding) and ``mask (B, N)``,
    with N the largest node count."""
    if len(xs) != len(edge_indices) or not xs:
        raise ValueError("need as many edge indices as feature matrices, and at least one graph")
    big = max(x.shape[0] for x in xs)
    b, d = len(xs), xs[0].shape[1]
    x = xs[0].new_zeros(b, big, d)
    adj, a_hat = x.new_zeros(b, big, big), x.new_zeros(b, big, big)
    mask = torch.zeros(b, big, dtype=torch.bool, device=x.device)
    for i, (xi, ei) in enumerate(zip(xs, edge_indices)):
        n = xi.shape[0]
        x[i, :n], mask[i, :n] = xi, True
        adj[i, :n, :n] = (graphs.to_dense_adj(ei, n) > 0).to(x.dtype)
        a_hat[i, :n, :n] = graphs.normalized_adjacency(ei, n, dtype=x.dtype)
    return x, adj, a_hat, mask


class DenseGCN(nn.Module):
    """GCN layers ``X <- ReLU(Â X W + b)`` (5.4) on a padded dense batch ``Â (B, N, N)``.

    Layer l computes exactly what :class:`dlbook.gcn.GCNLayer` computes on one graph
    (weights stored as ``(d_in, d_out)``); padded rows of Â are zero, so padding never
    reaches real nodes. forward(x ``(B, N, d_in)``, a_hat) -> ``(B, N, d_hidden)``.
    """

    def __init__(self, d_in: int, d_hidden: int, layers: int = 2):
        super().__init__()
        from .gcn import GCNLayer
        widths = [d_in] + [d_hidden] * layers
        self.layers = nn.ModuleList(GCNLayer(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(a_hat @ (x @ layer.weight) + layer.bias)
        return x


class SlideGraphTransformer(nn.Module):
    """GCN -> min-cut pooling -> graph transformer -> mean -> slide scores (§5.6).

    forward(x ``(B, N, d_in)``, adj, a_hat, mask) returns ``(scores (B, classes),
    L_c, L_o, S)``. The transformer layers (:class:`dlbook.graph_transformer.GTLayer`,
    pre-norm, LayerNorm) attend over all K clusters: ``A_pool`` is dense, so the mask of
    (5.18) would keep every pair anyway.
    """

    def __init__(self, d_in: int, d_hidden: int = 32, clusters: int = 8, gt_layers: int = 1,
                 n_heads: int = 4, classes: int = 2, gcn_layers: int = 2):
        super().__init__()
        self.gcn = DenseGCN(d_in, d_hidden, gcn_layers)
        self.pool = MinCutPool(d_hidden, clusters)
        self.gt = nn.ModuleList(GTLayer(d_hidden, n_heads, mode="full", norm="layer", norm_position="pre")
                                for _ in range(gt_layers))
        self.head = nn.Linear(d_hidden, classes)

    def forward(self, x, adj, a_hat, mask):
        h = self.gcn(x, a_hat)
        xp, ap, lc, lo, S = self.pool(h, adj, mask)
        xp = xp / mask.sum(1).to(xp.dtype)[:, None, None].sqrt()       # keep the scale O(1)
        for layer in self.gt:
            xp = layer(xp, ap)
        return self.head(xp.mean(1)), lc, lo, S
