"""Tests of dlbook.wsi: synthetic slides, tiling, the patch graph, min-cut pooling, the slide models."""
import pytest
import torch

from dlbook import gcn, wsi


def test_tissue_grid_and_arrangements():
    g = torch.Generator().manual_seed(0)
    tissue = wsi.tissue_grid(10, 24, g)
    assert tissue.shape == (10, 10) and int(tissue.sum()) >= 24
    coords = torch.nonzero(tissue)
    ei = wsi.patch_graph(coords)
    for touching in (False, True):
        types = wsi.arrange_patches(coords, 6, 4, touching, g)
        assert types is not None and types.shape == (len(coords),)
        assert torch.bincount(types, minlength=3)[1:].tolist() == [6, 4]
        j, i = ei
        assert bool(((types[j] == 1) & (types[i] == 2)).any()) == touching
    with pytest.raises(ValueError, match="grid"):
        wsi.tissue_grid(3)
    with pytest.raises(ValueError, match="n_tumour"):
        wsi.arrange_patches(coords, 0, 4, True, g)


def test_make_slides_counts_do_not_depend_on_the_label():
    slides = wsi.make_slides(12, 10, 8, n_tumour=5, n_lymph=3,
                             generator=torch.Generator().manual_seed(3))
    labels = {s["label"] for s in slides}
    assert labels == {0, 1}
    for s in slides:
        n = len(s["types"])
        # the type counts are the same constants on every slide, whatever its label
        assert torch.bincount(s["types"], minlength=3).tolist() == [n - 8, 5, 3]
        assert s["image"].shape == (3, 80, 80) and s["patches"].shape == (n, 3, 8, 8)
        assert s["coords"].shape == (n, 2) and int(s["edge_index"].max()) < n
        j, i = s["edge_index"]
        assert int(((s["types"][j] == 1) & (s["types"][i] == 2)).any()) == s["label"]
        idx = s["coords"][:, 0] * 10 + s["coords"][:, 1]
        torch.testing.assert_close(wsi.tile(s["image"], 8)[idx], s["patches"])
    with pytest.raises(ValueError, match="n_slides"):
        wsi.make_slides(0)
    with pytest.raises(ValueError, match="min_patches"):
        wsi.make_slides(1, n_tumour=20, n_lymph=10, min_patches=24)


def test_render_patches_depend_on_type_only():
    types = torch.tensor([0, 1, 2, 0])
    a = wsi.render_patches(types, 16, torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 16, 16) and 0 <= float(a.min()) and float(a.max()) <= 1
    # lymphocyte and tumour patches are darker than normal stroma on average
    assert a[1].mean() < a[0].mean() and a[2].mean() < a[0].mean()
    with pytest.raises(ValueError, match="types"):
        wsi.render_patches(torch.tensor([3]))


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


def test_ablation_models_shapes_bag_invariance_and_fit():
    torch.manual_seed(3)
    (x, adj, a_hat, mask), xs, eis = padded_batch(3)
    for model in (wsi.PatchMIL(6, 8, "max"), wsi.PatchMIL(6, 8, "mean"),
                  wsi.GCNReadout(6, 8), wsi.MinCutGCN(6, 8, clusters=3)):
        out = model(x, adj, a_hat, mask)
        scores = out[0] if isinstance(out, tuple) else out
        assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    mil = wsi.PatchMIL(6, 8, "max")
    # a bag model ignores the edges
    torch.testing.assert_close(mil(x, adj, a_hat, mask), mil(x, adj * 0, a_hat * 0, mask))
    with pytest.raises(ValueError, match="reduce"):
        wsi.PatchMIL(6, 8, "sum")
    y = torch.tensor([0, 1, 0])
    data = (x, adj, a_hat, mask, y)
    model = wsi.MinCutGCN(6, 8, clusters=3)
    hist = wsi.fit_slides(model, data, data, epochs=2, lr=1e-2, batch_size=2)
    assert len(hist["loss"]) == 2 and 1 <= hist["best_epoch"] <= 2
    ev = wsi.evaluate_slides(model, data)
    assert ev["accuracy"] == hist["val_accuracy"] and ev["S"].shape == (3, 9, 3)
    mass = wsi.cluster_mass(ev["S"], mask)
    torch.testing.assert_close(mass.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="epochs"):
        wsi.fit_slides(model, data, data, epochs=0)
    with pytest.raises(ValueError, match="need S"):
        wsi.cluster_mass(ev["S"], mask[:, :4])


def test_stack_slides_pads_to_size():
    slides = wsi.make_slides(3, 10, 8, generator=torch.Generator().manual_seed(4))
    for s in slides:
        s["x"] = torch.randn(len(s["types"]), 5)
    x, adj, a_hat, mask, y = wsi.stack_slides(slides, size=100)
    assert x.shape == (3, 100, 5) and adj.shape == a_hat.shape == (3, 100, 100)
    assert mask.sum(1).tolist() == [len(s["types"]) for s in slides]
    with pytest.raises(ValueError, match="smaller"):
        wsi.stack_slides(slides, size=2)


def test_slide_loss_weights_and_bad_input():
    torch.manual_seed(5)
    scores, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    lc, lo = torch.tensor(-0.7), torch.tensor(0.4)
    ce = torch.nn.functional.cross_entropy(scores, y)
    torch.testing.assert_close(wsi.slide_loss(scores, y), ce)
    torch.testing.assert_close(wsi.slide_loss(scores, y, lc, lo), ce + lc + lo)
    torch.testing.assert_close(wsi.slide_loss(scores, y, lc, lo, cut_weight=0.5, ortho_weight=5),
                               ce + 0.5 * lc + 5 * lo)
    with pytest.raises(ValueError, match="ortho_weight"):
        wsi.slide_loss(scores, y, lc, lo, ortho_weight=-1.0)
    with pytest.raises(ValueError, match="cut_weight"):
        wsi.slide_loss(scores, y, lc, lo, cut_weight=float("nan"))
    with pytest.raises(TypeError, match="ortho_weight"):
        wsi.slide_loss(scores, y, lc, lo, ortho_weight="5")
    with pytest.raises(ValueError, match="both pooling losses"):
        wsi.slide_loss(scores, y, lc, None)
    with pytest.raises(ValueError, match="need scores"):
        wsi.slide_loss(scores, y[:3])
    (x, adj, a_hat, mask), _, _ = padded_batch(4)
    data = (x, adj, a_hat, mask, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="ortho_weight"):
        wsi.fit_slides(wsi.MinCutGCN(6, 8, clusters=3), data, data, epochs=1, ortho_weight=-5)


def test_degenerate_ortho_is_the_largest_orthogonality_loss():
    assert wsi.degenerate_ortho(4) == pytest.approx(1.0)
    (x, adj, _, mask), _, _ = padded_batch(5)
    for k in (2, 3, 5):
        top = wsi.degenerate_ortho(k)
        for scale in (0.1, 1.0, 10.0):
            s = scale * torch.randn(x.shape[0], x.shape[1], k)
            *_, lo = wsi.mincut_pool(x, adj, s, mask)
            assert float(lo) <= top + 1e-6
        *_, lo = wsi.mincut_pool(x, adj, torch.zeros(x.shape[0], x.shape[1], k), mask)
        assert float(lo) == pytest.approx(top, abs=1e-5)                 # uniform S
    with pytest.raises(ValueError, match="K >= 2"):
        wsi.degenerate_ortho(1)


def test_pooling_diagnostics_flags_a_collapsed_pooling():
    torch.manual_seed(6)
    (x, adj, a_hat, mask), _, _ = padded_batch(6)
    data = (x, adj, a_hat, mask, torch.tensor([0, 1, 0]))
    model = wsi.MinCutGCN(6, 8, clusters=3)
    last = model.pool.mlp[-1]
    with torch.no_grad():                                  # every node in cluster 0
        last.weight.zero_()
        last.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
    d = wsi.pooling_diagnostics(model, data)
    assert d["collapsed"] and d["l_ortho"] == pytest.approx(wsi.degenerate_ortho(3), abs=1e-4)
    assert d["shares"].shape == (3,) and float(d["shares"][0]) == pytest.approx(1.0, abs=1e-4)
    assert d["crisp"] == pytest.approx(1.0, abs=1e-4) and d["l_cut"] == pytest.approx(-1.0)
    with torch.no_grad():                                  # three clusters by node feature
        last.weight.normal_(0, 1)
        last.bias.zero_()
    d = wsi.pooling_diagnostics(model, data, ortho_fraction=1.0, max_share=1.0)
    assert torch.allclose(d["shares"].sum(), torch.tensor(1.0))
    assert (d["shares"][:-1] >= d["shares"][1:]).all()                 # sorted, largest first
    with pytest.raises(TypeError, match="no pooling layer"):
        wsi.pooling_diagnostics(wsi.GCNReadout(6, 8), data)
    with pytest.raises(ValueError, match="ortho_fraction"):
        wsi.pooling_diagnostics(model, data, ortho_fraction=0.0)
