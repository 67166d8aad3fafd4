"""Tests of dlbook.wsi: synthetic slides, tiling, the patch graph, min-cut pooling, the slide model."""
import pytest
import torch

from dlbook import gcn, wsi


def test_synthetic_slide_shapes_and_masks():
    g = torch.Generator().manual_seed(0)
    img, tissue, tum = wsi.synthetic_slide(64, tumour=True, generator=g)
    assert img.shape == (3, 64, 64) and tissue.shape == tum.shape == (64, 64)
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    assert bool(tum.any()) and not bool((tum & ~tissue).any())
    _, _, none = wsi.synthetic_slide(64, tumour=False, generator=g)
    assert not bool(none.any())
    with pytest.raises(ValueError, match="size"):
        wsi.synthetic_slide(8)


def test_tile_order_and_errors():
    img = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    t = wsi.tile(img, 2)
    assert t.shape == (6, 2, 2, 2)
    torch.testing.assert_close(t[4], img[:, 2:4, 2:4])                    # row 1, column 1
    with pytest.raises(ValueError, match="must divide"):
        wsi.tile(img, 4)
    with pytest.raises(ValueError, match="shape"):
        wsi.tile(img[0], 2)


def test_tissue_patches_and_patch_graph():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :] = True
    frac, coords = wsi.tissue_patches(mask, 2)
    torch.testing.assert_close(frac, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert coords.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    grid = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert wsi.patch_graph(grid, 4).shape[1] == 8                         # 4 sides, both directions
    e8 = wsi.patch_graph(grid, 8)
    assert e8.shape[1] == 12                                              # all 6 pairs touch
    assert {tuple(c) for c in e8.t().tolist()} == {tuple(c) for c in e8.flip(0).t().tolist()}
    with pytest.raises(ValueError, match="neighbours"):
        wsi.patch_graph(grid, 6)


def test_make_slides_fields():
    slides = wsi.make_slides(3, 64, 16, generator=torch.Generator().manual_seed(1))
    for s in slides:
        n = s["patches"].shape[0]
        assert s["patches"].shape == (n, 3, 16, 16) and s["coords"].shape == (n, 2)
        assert s["tumour_fraction"].shape == (n,) and int(s["edge_index"].max()) < n


def padded_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs, eis = [], []
    for n in (7, 5, 9):
        coords = torch.stack([torch.arange(n) // 3, torch.arange(n) % 3], 1)
        xs.append(torch.randn(n, 6, generator=g))
        eis.append(wsi.patch_graph(coords))
    return wsi.pad_graphs(xs, eis), xs, eis


@pytest.mark.parametrize("use_mask", [True, False])
def test_mincut_pool_matches_pyg(use_mask):
    from torch_geometric.nn import dense_mincut_pool
    (x, adj, _, mask), _, _ = padded_batch()
    s = torch.randn(x.shape[0], x.shape[1], 4)
    m = mask if use_mask else None
    for a, b in zip(wsi.mincut_pool(x, adj, s, m), dense_mincut_pool(x, adj, s, m)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_mincut_pool_unnormalised_products_and_losses():
    torch.manual_seed(0)
    x, adj, s = torch.randn(6, 3), (torch.rand(6, 6) > 0.5).float(), torch.randn(6, 3)
    adj = ((adj + adj.T) > 0).float().fill_diagonal_(0)
    xp, ap, lc, lo = wsi.mincut_pool(x, adj, s, normalize=False)
    S = torch.softmax(s, -1)
    torch.testing.assert_close(xp[0], S.T @ x)
    torch.testing.assert_close(ap[0], S.T @ adj @ S)
    torch.testing.assert_close(lc, -torch.trace(S.T @ adj @ S) / torch.trace(S.T @ torch.diag(adj.sum(1)) @ S))
    ss = S.T @ S
    torch.testing.assert_close(lo, torch.linalg.norm(ss / torch.linalg.norm(ss) - torch.eye(3) / 3 ** 0.5))
    # gradients reach the scores
    s.requires_grad_(True)
    _, _, lc, lo = wsi.mincut_pool(x, adj, s)
    (lc + lo).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_mincut_pool_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 clusters"):
        wsi.mincut_pool(torch.randn(4, 3), torch.zeros(4, 4), torch.randn(4, 1))
    with pytest.raises(ValueError, match="shapes disagree"):
        wsi.mincut_pool(torch.randn(4, 3), torch.zeros(5, 5), torch.randn(4, 2))
    with pytest.raises(ValueError, match="mask must have shape"):
        wsi.mincut_pool(torch.randn(1, 4, 3), torch.zeros(1, 4, 4), torch.randn(1, 4, 2),
                        torch.ones(1, 3, dtype=torch.bool))


def test_dense_gcn_equals_gcn_layer_per_graph():
    torch.manual_seed(1)
    (x, _, a_hat, mask), xs, eis = padded_batch(1)
    dense = wsi.DenseGCN(6, 5, layers=1)
    out = dense(x, a_hat)
    for i, (xi, ei) in enumerate(zip(xs, eis)):
        n = xi.shape[0]
        ref = torch.relu(dense.layers[0](xi, ei))
        torch.testing.assert_close(out[i, :n], ref, atol=1e-5, rtol=1e-5)
    assert isinstance(dense.layers[0], gcn.GCNLayer)


def test_slide_model_shapes_padding_invariance_and_gradients():
    torch.manual_seed(2)
    (x, adj, a_hat, mask), xs, eis = padded_batch(2)
    model = wsi.SlideGraphTransformer(6, d_hidden=8, clusters=3, gt_layers=1, n_heads=2).eval()
    out, lc, lo, S = model(x, adj, a_hat, mask)
    assert out.shape == (3, 2) and S.shape == (3, 9, 3) and lc.dim() == lo.dim() == 0
    assert torch.equal(S[1, 5:], torch.zeros(4, 3))                       # padding gets no cluster
    alone = model(*wsi.pad_graphs(xs[1:2], eis[1:2]))[0]                  # same slide without padding
    torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=1e-5)
    model.train()
    out, lc, lo, _ = model(x, adj, a_hat, mask)
    (out.sum() + lc + lo).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_patch_resnet_shapes_and_errors():
    net = wsi.PatchResNet(width=8, blocks=1, d_embed=12)
    x = torch.randn(5, 3, 16, 16)
    assert net.embed(x).shape == (5, 12) and net(x).shape == (5, 2)
    with pytest.raises(ValueError, match="patches must have shape"):
        net.embed(torch.randn(5, 1, 16, 16))
    with pytest.raises(ValueError, match="at least one graph"):
        wsi.pad_graphs([], [])
