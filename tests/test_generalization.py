"""Tests of dlbook.generalization (chapter 04)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from dlbook import generalization as G
from dlbook import mlp


def test_corrupt_labels_fraction_and_shapes():
    y = torch.arange(1000) % 10
    g = torch.Generator().manual_seed(0)
    new, changed = G.corrupt_labels(y, 0.3, 10, g)
    assert new.shape == y.shape and new.dtype == torch.int64 and changed.sum() == 300
    assert torch.equal(new[~changed], y[~changed])
    assert new.min() >= 0 and new.max() < 10
    same, none = G.corrupt_labels(y, 0.0, 10, g)
    assert torch.equal(same, y) and none.sum() == 0
    rand, _ = G.corrupt_labels(y, 1.0, 10, g)
    assert 0.03 < (rand == y).float().mean() < 0.2  # about 1/C agree by chance


def test_corrupt_labels_bad_input():
    with pytest.raises(ValueError):
        G.corrupt_labels(torch.arange(5), 1.5, 10)
    with pytest.raises(TypeError):
        G.corrupt_labels(torch.arange(5).float(), 0.5, 10)
    with pytest.raises(ValueError):
        G.corrupt_labels(torch.arange(12), 0.5, 10)


def test_epochs_to_fit():
    assert G.epochs_to_fit([0.5, 0.98, 0.995, 1.0]) == 3
    assert G.epochs_to_fit([0.5, 0.6]) is None
    with pytest.raises(ValueError):
        G.epochs_to_fit([1.0], threshold=0)


def test_random_features_shapes():
    w = G.random_feature_weights(5, 7, torch.Generator().manual_seed(0))
    phi = G.random_features(torch.randn(3, 5, dtype=torch.float64), w)
    assert phi.shape == (3, 7) and (phi >= 0).all()
    with pytest.raises(ValueError):
        G.random_features(torch.randn(3, 4), w)


@pytest.mark.parametrize("n,N", [(30, 10), (10, 30), (20, 20)])
def test_min_norm_lstsq_matches_torch(n, N):
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(n, N, generator=g, dtype=torch.float64)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    beta = G.min_norm_lstsq(phi, y)
    ref = torch.linalg.lstsq(phi, y, driver="gelsd").solution
    assert torch.allclose(beta, ref, atol=1e-9)
    assert torch.allclose(beta, torch.linalg.pinv(phi) @ y, atol=1e-9)
    assert G.min_norm_lstsq(phi, y[:, 0]).shape == (N,)


def test_min_norm_interpolates_and_is_minimal():
    g = torch.Generator().manual_seed(2)
    phi = torch.randn(10, 40, generator=g, dtype=torch.float64)
    y = torch.randn(10, generator=g, dtype=torch.float64)
    beta = G.min_norm_lstsq(phi, y)
    assert torch.allclose(phi @ beta, y, atol=1e-10)
    null = torch.linalg.svd(phi).Vh[10:].T @ torch.randn(30, generator=g, dtype=torch.float64)
    assert torch.allclose(phi @ (beta + null), y, atol=1e-10)
    assert (beta + null).norm() > beta.norm()


def test_ridge_matches_normal_equations():
    g = torch.Generator().manual_seed(3)
    phi = torch.randn(20, 8, generator=g, dtype=torch.float64)
    y = torch.randn(20, 2, generator=g, dtype=torch.float64)
    lam = 0.7
    ref = torch.linalg.solve(phi.T @ phi + lam * torch.eye(8, dtype=torch.float64), phi.T @ y)
    assert torch.allclose(G.min_norm_lstsq(phi, y, ridge=lam), ref, atol=1e-10)
    with pytest.raises(ValueError):
        G.min_norm_lstsq(phi, y, ridge=-1)
    with pytest.raises(ValueError):
        G.min_norm_lstsq(phi, y[:5])


def test_magnitude_prune_matches_torch_prune_over_rounds():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    w0 = layer.weight.detach().clone()
    mask = None
    for _ in range(3):
        prune.l1_unstructured(layer, "weight", amount=0.2)
        mask = G.magnitude_prune(w0, mask, 0.2)
        assert torch.equal(mask, layer.weight_mask)
    assert int(mask.sum()) == 600 - 120 - 96 - 77


def test_random_prune_and_bad_input():
    m = torch.ones(10, 10)
    r = G.random_prune(m, 0.25, torch.Generator().manual_seed(0))
    assert int(r.sum()) == 75
    with pytest.raises(ValueError):
        G.magnitude_prune(torch.randn(3, 3), torch.ones(2, 2), 0.1)
    with pytest.raises(ValueError):
        G.magnitude_prune(torch.randn(3, 3), None, 1.5)


def test_masks_rewind_and_gradient_hooks():
    torch.manual_seed(0)
    model = mlp.MLP(mlp.MLPConfig((6, 5, 3)))
    assert set(G.prunable(model)) == {"weights.0", "weights.1"}
    start = G.snapshot(model)
    masks = {k: G.magnitude_prune(p, None, 0.5) for k, p in G.prunable(model).items()}
    assert G.sparsity_report(masks) == pytest.approx(0.5, abs=0.05)
    G.apply_masks(model, masks)
    hooks = G.mask_gradients(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = model(torch.randn(4, 6)).pow(2).sum()
        opt.zero_grad(); loss.backward(); opt.step()
    for k, m in masks.items():
        assert (dict(model.named_parameters())[k][m == 0] == 0).all()
    G.rewind(model, start, masks)
    for k, p in model.named_parameters():
        expected = start[k] * masks[k] if k in masks else start[k]
        assert torch.equal(p.detach(), expected)
    for h in hooks:
        h.remove()
    with pytest.raises(KeyError):
        G.apply_masks(model, {"nope": torch.ones(1)})


def test_fit_power_law_recovers_parameters():
    x = np.logspace(1, 5, 12)
    law = G.fit_power_law(x, 3.0 * x ** -0.5)
    assert law.a == pytest.approx(3.0, rel=1e-9) and law.alpha == pytest.approx(0.5, rel=1e-9)
    slope, intercept = np.polyfit(np.log(x), np.log(3.0 * x ** -0.5), 1)
    assert law.alpha == pytest.approx(-slope) and law.a == pytest.approx(np.exp(intercept))
    law = G.fit_power_law(x, 3.0 * x ** -0.5 + 0.1, offset=True)
    assert law.alpha == pytest.approx(0.5, rel=1e-4) and law.c == pytest.approx(0.1, rel=1e-4)
    assert np.allclose(law(x), 3.0 * x ** -0.5 + 0.1, rtol=1e-4)
    with pytest.raises(ValueError):
        G.fit_power_law([1, 2], [1, -1])
    with pytest.raises(ValueError):
        G.fit_power_law([1, 2], [1, 2], offset=True)


def test_filter_normalized_direction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    params = {k: v.detach() for k, v in model.named_parameters()}
    d = G.filter_normalized_direction(params, torch.Generator().manual_seed(0))
    assert set(d) == set(params)
    for k, v in params.items():
        assert d[k].shape == v.shape
        if v.ndim == 1:
            assert (d[k] == 0).all()
        else:
            assert torch.allclose(d[k].norm(dim=1), v.norm(dim=1), atol=1e-6)
    m = mlp.MLP(mlp.MLPConfig((4, 6, 2)))
    p = {k: v.detach() for k, v in m.named_parameters()}
    d = G.filter_normalized_direction(p, torch.Generator().manual_seed(0), unit_dim=1)
    assert torch.allclose(d["weights.0"].norm(dim=0), p["weights.0"].norm(dim=0), atol=1e-6)
    assert (d["biases.0"] == 0).all()
    with pytest.raises(ValueError):
        G.filter_normalized_direction(p, unit_dim=5)


def test_landscape_slices():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    loss_of = G.functional_loss(x, y, nn.functional.cross_entropy)
    center = G.snapshot(model)
    zero = {k: torch.zeros_like(v) for k, v in center.items()}
    base = nn.functional.cross_entropy(model(x), y).item()
    line = G.linear_path_losses(model, zero, center, [0.0, 1.0], loss_of)
    assert line.shape == (2,) and line[1] == pytest.approx(base, rel=1e-6)
    assert line[0] == pytest.approx(np.log(3), rel=1e-6)
    d1 = G.filter_normalized_direction(center, torch.Generator().manual_seed(1))
    d2 = G.filter_normalized_direction(center, torch.Generator().manual_seed(2))
    grid = G.plane_losses(model, center, d1, d2, [-1, 0, 1], [0, 0.5], loss_of)
    assert grid.shape == (2, 3) and grid[0, 1] == pytest.approx(base, rel=1e-6)
    with pytest.raises(ValueError):
        G.linear_path_losses(model, {"a": torch.zeros(1)}, center, [0.0], loss_of)


def _toy_classification(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def test_train_early_stopping_keeps_the_best_validation_parameters():
    import torch.nn.functional as F

    x, y = _toy_classification(40, 0)
    x_val, y_val = _toy_classification(200, 1)
    torch.manual_seed(0)
    model = mlp.MLP(mlp.MLPConfig((5, 64, 2)))
    result = G.train_early_stopping(model, x, y, x_val, y_val, F.cross_entropy, max_steps=400,
                                    batch_size=16, lr=1e-2, eval_every=10, patience=3,
                                    generator=torch.Generator().manual_seed(0))
    steps, losses = zip(*result.val_curve)
    assert steps[0] == 0 and all(b - a == 10 for a, b in zip(steps, steps[1:]))
    assert result.best_val_loss == min(losses) and result.best_step == steps[losses.index(min(losses))]
    # the model was left at the best checkpoint, not at the last step
    with torch.no_grad():
        assert float(F.cross_entropy(model(x_val), y_val)) == pytest.approx(result.best_val_loss)
    # patience: the run stops 3 evaluations after the best one (or at max_steps)
    assert result.steps == min(400, result.best_step + 30) and result.best_step > 0
    # the same generator and initialisation give the same run
    torch.manual_seed(0)
    again = G.train_early_stopping(mlp.MLP(mlp.MLPConfig((5, 64, 2))), x, y, x_val, y_val,
                                   F.cross_entropy, max_steps=400, batch_size=16, lr=1e-2,
                                   eval_every=10, patience=3,
                                   generator=torch.Generator().manual_seed(0))
    assert again == result
    with pytest.raises(ValueError):
        G.train_early_stopping(model, x, y[:3], x_val, y_val, F.cross_entropy, max_steps=5)
