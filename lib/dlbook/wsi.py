"""Whole-slide-image classification with graphs (Baggag & Saad §5.6), on synthetic slides.

The pipeline of the section, step by step:

1. a slide ``(3, H, W)`` is cut into non-overlapping ``p x p`` patches (:func:`tile`);
   patches that are glass are dropped (:func:`tissue_patches`);
2. a small residual CNN (:class:`PatchResNet`, He et al.) embeds each patch as a row
   ``x_i`` of ``X (n, d)``;
3. the patches are the nodes of a graph whose edges join grid neighbours
   (:func:`patch_graph`); GCN layers ``Â X W`` (5.4) mix neighbouring patches;
4. min-cut pooling (footnote 8 of the section; Bianchi et al. 2020) assigns the nodes
   softly to K clusters, ``S = softmax(MLP(X))`` ``(n, K)``, and coarsens the graph,

       X_pool = S^T X  (K, d),        A_pool = S^T A S  (K, K),

   trained with the min-cut loss ``L_c = -tr(S^T A S) / tr(S^T D S)`` and the
   orthogonality loss ``L_o = || S^T S / ||S^T S||_F - I_K / sqrt(K) ||_F``, added to
   the cross-entropy with weights, ``CE + w_c L_c + w_o L_o`` (:func:`slide_loss`;
   Bianchi et al. use ``w_c = w_o = 1``). Both degenerate assignments, one cluster or
   ``S_ik = 1/K``, have ``L_c = -1`` and ``L_o = sqrt(2 - 2/sqrt K)``, the largest
   value ``L_o`` can take (:func:`degenerate_ortho`); :func:`pooling_diagnostics`
   tells whether a trained model sits there;
5. a graph transformer (:mod:`dlbook.graph_transformer`) runs on the K clusters and
   their mean gives the slide's label.

The slides are generated here (:func:`make_slides`) so that the label depends on the
*arrangement* of the tissue only. A slide is a grid of patches; each tissue patch has
one of three types (:data:`PATCH_TYPES`): normal stroma, tumour, or a lymphocyte
aggregate. Every slide has exactly ``n_tumour`` tumour patches forming one connected
focus and ``n_lymph`` lymphocyte patches forming one connected aggregate; the label is
1 ("infiltrated") when the aggregate touches the tumour (8-neighbour grid) and 0 when
it lies apart. Each patch is painted independently of its neighbours from its type
alone, and the tissue outline is drawn before the label (a tissue is kept only if both
arrangements fit on it), so the multiset of patches has the same distribution in both
classes: any function of the bag of patches is at chance. The images imitate
H&E-stained tissue only loosely; no real patient data.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import graphs
from .cnn import ConvBlock
from .graph_transformer import GTLayer

__all__ = ["PATCH_TYPES", "tissue_grid", "arrange_patches", "render_patches", "make_slides",
           "tile", "tissue_patches", "patch_graph", "mincut_pool", "MinCutPool", "PatchResNet",
           "DenseGCN", "PatchMIL", "GCNReadout", "MinCutGCN", "SlideGraphTransformer",
           "pad_graphs", "stack_slides", "slide_loss", "fit_slides", "evaluate_slides",
           "cluster_mass", "degenerate_ortho", "pooling_diagnostics"]

PATCH_TYPES = ("normal", "tumour", "lymphocytes")
BACKGROUND = torch.tensor([0.95, 0.94, 0.95])
STROMA = torch.tensor([0.92, 0.62, 0.76])
TUMOUR_STROMA = torch.tensor([0.72, 0.42, 0.62])
NUCLEUS = torch.tensor([0.33, 0.18, 0.52])
# per type: stroma colour, nucleus density (fraction of pixels that seed one), radius
_TEXTURE = {0: (STROMA, 0.012, 1.0), 1: (TUMOUR_STROMA, 0.035, 2.0), 2: (STROMA, 0.20, 1.0)}


def _blobs(size: int, n: int, radius: tuple[float, float], g: torch.Generator | None,
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
    """Stamp a disc of ``radius`` pixels on every True pixel of ``points`` (..., H, W)."""
    r = math.ceil(radius)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    kernel = ((yy ** 2 + xx ** 2) <= radius ** 2 + 0.25).float()[None, None]
    shape = points.shape
    out = F.conv2d(points.float().reshape(-1, 1, *shape[-2:]), kernel, padding=r)
    return out.reshape(shape).clamp(max=1.0)


def _neighbours(coords: torch.Tensor) -> list[list[int]]:
    n = coords.shape[0]
    lists: list[list[int]] = [[] for _ in range(n)]
    for j, i in patch_graph(coords).t().tolist():
        lists[i].append(j)
    return lists


def _components(nbrs: list[list[int]]) -> list[list[int]]:
    seen, comps = set(), []
    for s in range(len(nbrs)):
        if s in seen:
            continue
        comp, stack = [], [s]
        seen.add(s)
        while stack:
            u = stack.pop()
            comp.append(u)
            for v in nbrs[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        comps.append(comp)
    return comps


def tissue_grid(grid: int = 10, min_patches: int = 24, generator: torch.Generator | None = None,
                max_tries: int = 1000) -> torch.Tensor:
    """A random piece of tissue on a ``grid x grid`` patch grid: ``(grid, grid)`` bool.

    A thresholded sum of four Gaussian bumps, reduced to its largest 8-connected
    component; redrawn until it has at least ``min_patches`` patches.
    """
    if grid < 4:
        raise ValueError(f"grid must be at least 4 patches, got {grid}")
    if not 1 <= min_patches <= grid * grid:
        raise ValueError(f"min_patches must be in [1, {grid * grid}], got {min_patches}")
    for _ in range(max_tries):
        field = _blobs(grid, 4, (0.12 * grid, 0.22 * grid), generator) > 0.6
        coords = torch.nonzero(field)
        if len(coords) < min_patches:
            continue
        big = max(_components(_neighbours(coords)), key=len)
        if len(big) >= min_patches:
            out = torch.zeros(grid, grid, dtype=torch.bool)
            kept = coords[big]
            out[kept[:, 0], kept[:, 1]] = True
            return out
    raise ValueError(f"no tissue of {min_patches} patches found on a {grid}x{grid} grid")


def _grow(nbrs: list[list[int]], allowed: set[int], start: int, size: int,
          g: torch.Generator | None) -> list[int] | None:
    """A random connected region of ``size`` nodes inside ``allowed``, grown from start."""
    region, frontier = [start], set(v for v in nbrs[start] if v in allowed)
    members = {start}
    while len(region) < size:
        frontier -= members
        if not frontier:
            return None
        options = sorted(frontier)
        v = options[int(torch.randint(len(options), (1,), generator=g))]
        region.append(v)
        members.add(v)
        frontier |= {u for u in nbrs[v] if u in allowed}
    return region


def arrange_patches(coords: torch.Tensor, n_tumour: int, n_lymph: int, touching: bool,
                    generator: torch.Generator | None = None, tries: int = 50
                    ) -> torch.Tensor | None:
    """Patch types ``(n,)`` (0 normal, 1 tumour, 2 lymphocytes) for tissue ``coords (n, 2)``.

    One connected tumour focus of ``n_tumour`` patches and one connected lymphocyte
    aggregate of ``n_lymph`` patches (8-neighbour connectivity). ``touching=True``: some
    aggregate patch is a grid neighbour of a tumour patch; ``False``: none is. Returns
    None when ``tries`` random attempts fail (the tissue is too small or thin).
    """
    if n_tumour < 1 or n_lymph < 1:
        raise ValueError(f"need n_tumour, n_lymph >= 1, got {n_tumour}, {n_lymph}")
    n = coords.shape[0]
    if n < n_tumour + n_lymph:
        return None
    g, nbrs = generator, _neighbours(coords)
    everything = set(range(n))
    for _ in range(tries):
        start = int(torch.randint(n, (1,), generator=g))
        tum = _grow(nbrs, everything, start, n_tumour, g)
        if tum is None:
            continue
        near = set(tum) | {v for u in tum for v in nbrs[u]}
        allowed = everything - set(tum) if touching else everything - near
        seeds = sorted(near - set(tum)) if touching else sorted(allowed)
        if not seeds:
            continue
        s = seeds[int(torch.randint(len(seeds), (1,), generator=g))]
        lym = _grow(nbrs, allowed, s, n_lymph, g)
        if lym is None:
            continue
        types = torch.zeros(n, dtype=torch.long)
        types[tum], types[lym] = 1, 2
        return types
    return None


def render_patches(types: torch.Tensor, patch: int = 16, generator: torch.Generator | None = None,
                   noise: float = 0.03) -> torch.Tensor:
    """Paint one ``(3, patch, patch)`` image per entry of ``types (n,)``: ``(n, 3, p, p)``.

    Each patch is drawn from its type alone (never from its neighbours): normal stroma
    with sparse small nuclei, tumour with dense large nuclei on a darker stroma, or a
    lymphocyte aggregate of crowded small nuclei; plus Gaussian pixel noise.
    """
    if types.dim() != 1 or (types.numel() and (types.min() < 0 or types.max() > 2)):
        raise ValueError("types must be a 1-D tensor of values in {0, 1, 2}")
    g, n = generator, types.shape[0]
    u = torch.rand(n, patch, patch, generator=g)
    img = torch.empty(n, 3, patch, patch)
    for t, (stroma, density, radius) in _TEXTURE.items():
        sel = types == t
        nuclei = _discs(u[sel] > 1 - density, radius)[:, None]     # (m, 1, p, p)
        img[sel] = stroma[:, None, None] * (1 - nuclei) + NUCLEUS[:, None, None] * nuclei
    img = img + noise * torch.randn(n, 3, patch, patch, generator=g)
    return img.clamp(0, 1)


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


def make_slides(n_slides: int, grid: int = 10, patch: int = 16, n_tumour: int = 6,
                n_lymph: int = 4, min_patches: int = 24,
                generator: torch.Generator | None = None) -> list[dict]:
    """``n_slides`` synthetic slides whose label depends on the arrangement only.

    Slide i gets label 1 ("infiltrated": the lymphocyte aggregate touches the tumour)
    with probability 1/2. Its tissue (:func:`tissue_grid`) is kept only if *both*
    arrangements (:func:`arrange_patches`) fit on it, then the one of its label is used;
    so tissue size, and the patch-type counts (``n_tumour``, ``n_lymph``, the rest
    normal), have the same distribution in both classes. Each entry holds ``image
    (3, grid p, grid p)``, ``label``, and for the n tissue patches ``patches
    (n, 3, p, p)``, ``coords (n, 2)`` (row, column), ``types (n,)`` and ``edge_index``
    (8-neighbour :func:`patch_graph`).
    """
    if n_slides < 1:
        raise ValueError(f"n_slides must be positive, got {n_slides}")
    if n_tumour + n_lymph >= min_patches:
        raise ValueError("n_tumour + n_lymph must be smaller than min_patches")
    g, out = generator, []
    for _ in range(n_slides):
        label = int(torch.rand(1, generator=g) < 0.5)
        while True:
            coords = torch.nonzero(tissue_grid(grid, min_patches, g))
            both = [arrange_patches(coords, n_tumour, n_lymph, t, g) for t in (False, True)]
            if both[0] is not None and both[1] is not None:
                break
        types = both[label]
        patches = render_patches(types, patch, g)
        image = BACKGROUND[:, None, None].repeat(1, grid * patch, grid * patch)
        image += 0.03 * torch.randn(image.shape, generator=g)
        for (r, c), p in zip(coords.tolist(), patches):
            image[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = p
        out.append(dict(image=image.clamp(0, 1), label=label, patches=patches,
                        coords=coords, types=types, edge_index=patch_graph(coords)))
    return out


# ---------------------------------------------------------------------------
# The patch encoder: a small ResNet

class PatchResNet(nn.Module):
    """A small residual CNN for ``(B, 3, p, p)`` patches.

    stem ``Conv3x3(3 -> width) + ReLU + MaxPool2``, ``blocks`` residual blocks
    (:class:`dlbook.cnn.ConvBlock`, ``relu(x + conv(relu(conv(x))))``), global average
    pooling and a linear map to ``d_embed``, after standardising the pixels as
    ``(x - mean) / std`` (slide pixels lie near 0.7 +- 0.2; without this the network
    learns several times more slowly): :meth:`embed` returns ``(B, d_embed)``;
    forward adds a ReLU and a linear head with ``classes`` scores (patch labels).
    """

    def __init__(self, width: int = 16, blocks: int = 2, d_embed: int = 32, classes: int = 2,
                 mean: float = 0.7, std: float = 0.2):
        super().__init__()
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean, self.std = mean, std
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(*[ConvBlock(width, residual=True) for _ in range(blocks)])
        self.proj = nn.Linear(width, d_embed)
        self.head = nn.Linear(d_embed, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"patches must have shape (B, 3, p, p), got {tuple(x.shape)}")
        x = (x - self.mean) / self.std
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


# ---------------------------------------------------------------------------
# The slide models of the ablation: all take a padded batch (x, adj, a_hat, mask)

def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


class PatchMIL(nn.Module):
    """Multiple-instance baseline: a score per patch, then their max or mean.

    ``z_i = MLP(x_i)`` ``(B, N, classes)`` for every patch; the slide scores are
    ``max_i z_i`` or ``mean_i z_i`` over the real patches (``reduce``). The graph is
    ignored, so the output is a permutation-invariant function of the bag of patches.
    forward(x, adj, a_hat, mask) -> ``(B, classes)``.
    """

    def __init__(self, d_in: int, d_hidden: int = 32, reduce: str = "max", classes: int = 2):
        super().__init__()
        if reduce not in ("max", "mean"):
            raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(),
                                 nn.Linear(d_hidden, classes))

    def forward(self, x, adj, a_hat, mask):
        z = self.mlp(x)
        if self.reduce == "mean":
            return _masked_mean(z, mask)
        return z.masked_fill(~mask[..., None], float("-inf")).max(1).values


class GCNReadout(nn.Module):
    """GCN layers (5.4) on the patch graph, the mean over the patches, a linear layer.

    forward(x, adj, a_hat, mask) -> ``(B, classes)``; no pooling layer.
    """

    def __init__(self, d_in: int, d_hidden: int = 32, gcn_layers: int = 2, classes: int = 2):
        super().__init__()
        self.gcn = DenseGCN(d_in, d_hidden, gcn_layers)
        self.head = nn.Linear(d_hidden, classes)

    def forward(self, x, adj, a_hat, mask):
        return self.head(_masked_mean(self.gcn(x, a_hat), mask))


class MinCutGCN(nn.Module):
    """GCN -> min-cut pooling -> one GCN layer on the K clusters -> mean -> scores.

    The layer on the pooled graph is Bianchi et al.'s ``ReLU(A_pool X W + X V)`` (A_pool
    has a zero diagonal, so ``X V`` keeps each cluster's own state). forward(x, adj,
    a_hat, mask) -> ``(scores (B, classes), L_c, L_o, S (B, N, K))``.
    """

    def __init__(self, d_in: int, d_hidden: int = 32, clusters: int = 4, classes: int = 2,
                 gcn_layers: int = 2):
        super().__init__()
        self.gcn = DenseGCN(d_in, d_hidden, gcn_layers)
        self.pool = MinCutPool(d_hidden, clusters)
        self.mix, self.skip = nn.Linear(d_hidden, d_hidden), nn.Linear(d_hidden, d_hidden)
        self.head = nn.Linear(d_hidden, classes)

    def forward(self, x, adj, a_hat, mask):
        h = self.gcn(x, a_hat)
        xp, ap, lc, lo, S = self.pool(h, adj, mask)
        xp = xp / mask.sum(1).to(xp.dtype)[:, None, None].sqrt()       # keep the scale O(1)
        xp = F.relu(ap @ self.mix(xp) + self.skip(xp))
        return self.head(xp.mean(1)), lc, lo, S


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


# ---------------------------------------------------------------------------
# Training and evaluating slide models on padded batches

def stack_slides(slides: list[dict], key: str = "x", size: int | None = None
                 ) -> tuple[torch.Tensor, ...]:
    """All ``slides`` as one padded batch ``(x, adj, a_hat, mask, y)`` (see
    :func:`pad_graphs`), padded to ``size`` nodes (default: the largest slide)."""
    x, adj, a_hat, mask = pad_graphs([s[key] for s in slides],
                                     [s["edge_index"] for s in slides])
    if size is not None:
        if size < x.shape[1]:
            raise ValueError(f"size={size} is smaller than the largest slide {x.shape[1]}")
        extra = size - x.shape[1]
        x = F.pad(x, (0, 0, 0, extra))
        adj, a_hat = F.pad(adj, (0, extra, 0, extra)), F.pad(a_hat, (0, extra, 0, extra))
        mask = F.pad(mask, (0, extra))
    return x, adj, a_hat, mask, torch.tensor([s["label"] for s in slides])


def _scores_and_losses(out):
    if isinstance(out, tuple):
        return out[0], out[1], out[2], out[3]
    return out, None, None, None


@torch.no_grad()
def evaluate_slides(model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict:
    """Accuracy on a padded batch ``(x, adj, a_hat, mask, y)``, and for pooling models
    the min-cut and orthogonality losses and the assignment ``S``."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    scores, lc, lo, S = _scores_and_losses(model(*[t.to(dev) for t in data[:4]]))
    model.train(was)
    acc = float((scores.argmax(1).cpu() == data[4]).float().mean())
    out = dict(accuracy=acc, pred=scores.argmax(1).cpu())
    if lc is not None:
        out.update(l_cut=float(lc), l_ortho=float(lo), S=S.cpu())
    return out


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def slide_loss(scores: torch.Tensor, y: torch.Tensor, l_cut: torch.Tensor | None = None,
               l_ortho: torch.Tensor | None = None, cut_weight: float = 1.0,
               ortho_weight: float = 1.0) -> torch.Tensor:
    """The training loss of a slide model: scores ``(B, classes)``, labels ``y (B,)``.

    Without pooling losses (``l_cut`` and ``l_ortho`` None) it is the cross-entropy
    ``CE = -(1/B) sum_b log softmax(scores_b)[y_b]``; for a min-cut model

        L = CE + w_c L_c + w_o L_o,

    with ``L_c``, ``L_o`` the scalar losses of :func:`mincut_pool`, ``w_c`` =
    ``cut_weight`` and ``w_o`` = ``ortho_weight`` (finite, >= 0). Bianchi et al. (2020)
    use ``w_c = w_o = 1``; a larger ``w_o`` pulls harder away from the degenerate
    assignments, where ``L_c`` is at its minimum -1 and ``L_o`` at its maximum.
    """
    cut_weight = _check_weight("cut_weight", cut_weight)
    ortho_weight = _check_weight("ortho_weight", ortho_weight)
    if scores.dim() != 2 or y.shape != scores.shape[:1]:
        raise ValueError(f"need scores (B, classes) and y (B,), got {tuple(scores.shape)}, "
                         f"{tuple(y.shape)}")
    loss = F.cross_entropy(scores, y)
    if (l_cut is None) != (l_ortho is None):
        raise ValueError("give both pooling losses l_cut and l_ortho, or neither")
    if l_cut is not None:
        loss = loss + cut_weight * l_cut + ortho_weight * l_ortho
    return loss


def fit_slides(model: nn.Module, train: tuple[torch.Tensor, ...],
               val: tuple[torch.Tensor, ...], epochs: int, lr: float = 3e-3,
               batch_size: int = 16, cut_weight: float = 1.0, ortho_weight: float = 1.0,
               seed: int = 0, weight_decay: float = 0.0, progress: bool = False,
               desc: str = "slides") -> dict:
    """Adam on :func:`slide_loss`: the cross-entropy of the slide labels, plus
    ``cut_weight * L_c + ortho_weight * L_o`` for models that pool, ``epochs`` passes in
    batches of ``batch_size``. The weights of the epoch with the best validation
    accuracy (the first, on ties) are restored: that is how the number of epochs is
    chosen. Returns ``best_epoch``, ``val_accuracy`` and per-epoch lists ``loss``,
    ``val``."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    _check_weight("cut_weight", cut_weight)
    _check_weight("ortho_weight", ortho_weight)
    from tqdm.auto import tqdm
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(seed)
    n = train[4].shape[0]
    hist = dict(loss=[], val=[], best_epoch=0, val_accuracy=-1.0)
    best = None
    for epoch in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=order).split(batch_size):
            batch = [t[idx].to(dev) for t in train]
            scores, lc, lo, _ = _scores_and_losses(model(*batch[:4]))
            loss = slide_loss(scores, batch[4], lc, lo, cut_weight, ortho_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx) / n
        acc = evaluate_slides(model, val)["accuracy"]
        hist["loss"].append(total)
        hist["val"].append(acc)
        if acc > hist["val_accuracy"]:
            hist.update(best_epoch=epoch + 1, val_accuracy=acc)
            best = copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    return hist


def cluster_mass(S: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each slide's soft assignment mass per cluster, ``sum_i S_ik / n``:
    ``(B, K)``, rows summing to 1. All mass in one column is the single-cluster
    degenerate solution; ``1/K`` everywhere (with flat rows of S) the uniform one."""
    if S.dim() != 3 or mask.shape != S.shape[:2]:
        raise ValueError(f"need S (B, N, K) and mask (B, N), got {tuple(S.shape)}, "
                         f"{tuple(mask.shape)}")
    m = mask.to(S.dtype)[..., None]
    return (S * m).sum(1) / m.sum(1)


def degenerate_ortho(k: int) -> float:
    """``sqrt(2 - 2/sqrt K)``: the orthogonality loss of both degenerate assignments.

    For ``M = S^T S / ||S^T S||_F`` (positive semi-definite, ``||M||_F = 1``, so
    ``tr M >= 1``), ``L_o^2 = ||M - I/sqrt K||_F^2 = 2 - 2 tr(M) / sqrt K``: the value
    above is the largest ``L_o`` can take, reached when ``S^T S`` has rank one (every
    node in one cluster, or every row of S the same, e.g. uniform). 1 for K = 4.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"need an integer number of clusters K >= 2, got {k!r}")
    return math.sqrt(2 - 2 / math.sqrt(k))


def pooling_diagnostics(model: nn.Module, data: tuple[torch.Tensor, ...],
                        ortho_fraction: float = 0.9, max_share: float = 0.9) -> dict:
    """Is the min-cut pooling of a trained ``model`` degenerate on ``data``?

    ``data`` is a padded batch ``(x, adj, a_hat, mask, y)``. Returns the
    :func:`evaluate_slides` entries ``accuracy``, ``l_cut``, ``l_ortho``, and

    * ``shares`` ``(K,)``: :func:`cluster_mass` per slide, sorted from the largest
      cluster to the smallest, averaged over the slides (``(1, 0, ..., 0)``: one
      cluster holds everything; ``1/K`` each: balanced);
    * ``crisp``: the mean over real nodes of ``max_k S_ik`` (1/K uniform, 1 hard);
    * ``collapsed``: ``l_ortho >= ortho_fraction * degenerate_ortho(K)`` or
      ``shares[0] >= max_share``. The first catches both degenerate solutions (one
      cluster, uniform S), the second a single cluster even where ``L_o`` is lower.
    """
    if not 0 < ortho_fraction <= 1 or not 0 < max_share <= 1:
        raise ValueError(f"ortho_fraction and max_share must be in (0, 1], got "
                         f"{ortho_fraction}, {max_share}")
    ev = evaluate_slides(model, data)
    if "S" not in ev:
        raise TypeError(f"{type(model).__name__} has no pooling layer: it returned no S")
    mask = data[3]
    shares = cluster_mass(ev["S"], mask).sort(1, descending=True).values.mean(0)
    crisp = float(ev["S"].max(-1).values[mask].mean())
    limit = ortho_fraction * degenerate_ortho(int(ev["S"].shape[-1]))
    collapsed = ev["l_ortho"] >= limit or float(shares[0]) >= max_share
    return dict(accuracy=ev["accuracy"], l_cut=ev["l_cut"], l_ortho=ev["l_ortho"],
                shares=shares, crisp=crisp, collapsed=bool(collapsed))
