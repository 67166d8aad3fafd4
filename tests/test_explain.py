"""dlbook.explain: saliency and integrated gradients against captum, completeness,
the cascading randomisation, Spearman and SSIM."""

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from scipy.stats import spearmanr
from torch import nn

from dlbook import cnn, explain


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(27, 10)).eval()
    x = torch.rand(3, 1, 8, 8)
    return model, x, torch.tensor([0, 4, 9])


def test_saliency_equals_captum(tiny):
    model, x, t = tiny
    ours = explain.saliency(model, x, t)
    ref = Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=True)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-7)
    signed = explain.saliency(model, x, t, abs=False)
    ref = Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=False)
    torch.testing.assert_close(signed, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_left",
                                    "riemann_right"])
def test_integrated_gradients_equal_captum(tiny, method):
    model, x, t = tiny
    ours = explain.integrated_gradients(model, x, t, 0.0, 16, method, batch_steps=5)
    ref = IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=16,
                                               method=method)
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_quadrature_rules():
    for method in explain.METHODS:
        a, w = explain.quadrature(7, method)
        assert a.shape == w.shape == (7,) and np.all((a >= 0) & (a <= 1))
        assert w.sum() == pytest.approx(1.0)
    a, w = explain.quadrature(4, "gausslegendre")       # exact up to degree 7
    assert (w * a ** 7).sum() == pytest.approx(1 / 8, rel=1e-12)


def test_completeness_on_a_linear_model_is_exact():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x, base = torch.randn(4, 3, 4, dtype=torch.float64), torch.randn(3, 4).double()
    ig = explain.integrated_gradients(model, x, 2, base, n_steps=1)
    gap = explain.completeness_gap(model, x, ig, 2, base)
    assert gap.abs().max() < 1e-12


def test_completeness_gap_shrinks_with_steps(tiny):
    model, x, t = tiny
    model = model.double()
    xd = x.double()
    gaps = [explain.completeness_gap(
        model, xd, explain.integrated_gradients(model, xd, t, 0.0, k), t).abs().max()
        for k in (2, 128)]
    model.float()
    assert gaps[1] < gaps[0] and gaps[1] < 1e-2


def test_bad_input(tiny):
    model, x, t = tiny
    with pytest.raises(ValueError, match="target"):
        explain.saliency(model, x, torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="target"):
        explain.integrated_gradients(model, x, 10)
    with pytest.raises(ValueError, match="targets"):
        explain.saliency(model, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_steps"):
        explain.integrated_gradients(model, x, t, n_steps=0)
    with pytest.raises(ValueError, match="baseline"):
        explain.integrated_gradients(model, x, t, baseline=torch.zeros(1, 7, 8))
    with pytest.raises(ValueError, match="method"):
        explain.integrated_gradients(model, x, t, method="simpson")
    with pytest.raises(TypeError):
        explain.saliency(model, x, 1.5)
    with pytest.raises(TypeError):
        explain.saliency(model, x.long(), t)


def test_cascading_randomization():
    model = cnn.LeNet(c1=3, c2=4, hidden=8).eval()
    copies = explain.cascading_randomization(model, model.layers(), seed=3)
    assert len(copies) == 4
    for j, copy in enumerate(copies, start=1):          # top j layers re-drawn
        changed = [not torch.equal(a.weight, b.weight)
                   for a, b in zip(copy.layers(), model.layers())]
        assert changed == [False] * (4 - j) + [True] * j
    again = explain.cascading_randomization(model, model.layers(), seed=3)
    assert torch.equal(again[-1].conv1.weight, copies[-1].conv1.weight)
    with pytest.raises(ValueError):
        explain.cascading_randomization(model, [nn.Linear(2, 2)], seed=0)


def test_spearman_and_ssim():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    b[0, :2] = 0.0                                           # some ties
    ref = [spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(3)]
    torch.testing.assert_close(explain.spearman(a, b),
                               torch.tensor(ref, dtype=torch.float64))
    torch.testing.assert_close(explain.ssim(a, a), torch.ones(3, dtype=torch.float64))
    # one window covering the image: the global SSIM formula
    x, y = a[0].double(), b[0].double()
    rng = float(max(x.max(), y.max()) - min(x.min(), y.min()))
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    cov = ((x - x.mean()) * (y - y.mean())).sum() / 63
    want = ((2 * x.mean() * y.mean() + c1) * (2 * cov + c2)) / (
        (x.mean() ** 2 + y.mean() ** 2 + c1) * (x.var() + y.var() + c2))
    assert explain.ssim(a[:1], b[:1], window=8).item() == pytest.approx(want.item())
    with pytest.raises(ValueError):
        explain.spearman(a, b[:2])
