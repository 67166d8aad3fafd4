"""Tests of dlbook.kernel_regression: Nadaraya-Watson (4.1) as attention, its limits, LOO bandwidth."""
import math

import numpy as np
import pytest
import torch

from dlbook import kernel_regression as kr
from dlbook.attention import attention


@pytest.fixture(autouse=True)
def _dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def data(n=30, m=20, d=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(n, d, generator=g) * 5
    k = torch.rand(m, d, generator=g) * 5
    v = torch.randn(m, generator=g)
    return q, k, v


def loop_nw(q, k, v, sigma):
    """Eq. (4.1) written with Python loops over queries and keys."""
    out = []
    for qi in q:
        w = [math.exp(-0.5 * float(((qi - kj) ** 2).sum()) / sigma ** 2) for kj in k]
        s = sum(w)
        out.append(sum(wj / s * float(vj) for wj, vj in zip(w, v)))
    return torch.tensor(out)


@pytest.mark.parametrize("d", [1, 3])
def test_matches_direct_loop(d):
    q, k, v = data(d=d)
    for sigma in (0.3, 1.0, 4.0):
        pred, w = kr.nadaraya_watson(q, k, v, sigma)
        torch.testing.assert_close(pred, loop_nw(q, k, v, sigma), rtol=1e-10, atol=1e-12)
        assert pred.shape == (30,) and w.shape == (30, 20)
        torch.testing.assert_close(w.sum(-1), torch.ones(30))
        assert (w > 0).all()


def test_one_dimensional_inputs_and_matrix_values():
    q, k, v = data()
    p1, w1 = kr.nadaraya_watson(q[:, 0], k[:, 0], v, 0.5)
    p2, w2 = kr.nadaraya_watson(q, k, v[:, None].repeat(1, 4), 0.5)
    assert p2.shape == (30, 4)
    torch.testing.assert_close(p1, p2[:, 2])
    torch.testing.assert_close(w1, w2)


def test_batched_shapes():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(2, 5, 7, 3, generator=g), torch.randn(2, 5, 9, 3, generator=g), torch.randn(2, 5, 9, 4, generator=g)
    pred, w = kr.nadaraya_watson(q, k, v, 1.3)
    assert pred.shape == (2, 5, 7, 4) and w.shape == (2, 5, 7, 9)
    pred0, _ = kr.nadaraya_watson(q[1, 2], k[1, 2], v[1, 2], 1.3)
    torch.testing.assert_close(pred[1, 2], pred0)


def test_equals_softmax_and_dot_product_attention():
    q, k, v = data(d=2)
    sigma = 0.7
    pred, w = kr.nadaraya_watson(q, k, v, sigma)
    d2 = torch.cdist(q, k) ** 2
    torch.testing.assert_close(w, torch.softmax(-d2 / (2 * sigma ** 2), -1))
    # |q-k|^2 = |q|^2 - 2 q.k + |k|^2: the |q|^2 term cancels in the softmax
    out, w2 = attention(q, k, v[:, None], bias=-(k ** 2).sum(-1) / (2 * sigma ** 2), scale=1 / sigma ** 2)
    torch.testing.assert_close(out[:, 0], pred)
    torch.testing.assert_close(w2, w)


def test_tiny_sigma_is_nearest_neighbour_and_huge_sigma_is_the_mean():
    q, k, v = data()
    nn_pred = kr.nearest_neighbour(q, k, v)
    d2 = kr.squared_distances(q, k)
    torch.testing.assert_close(nn_pred, v[d2.argmin(-1)])
    pred, _ = kr.nadaraya_watson(q, k, v, 1e-4)
    torch.testing.assert_close(pred, nn_pred, rtol=0, atol=1e-9)
    pred, _ = kr.nadaraya_watson(q, k, v, 1e5)
    torch.testing.assert_close(pred, v.mean().expand(30), rtol=0, atol=1e-6)


def test_nearest_neighbour_matrix_values_and_ties():
    k = torch.tensor([0.0, 1.0, 2.0])
    v = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    out = kr.nearest_neighbour(torch.tensor([0.4, 0.5, 1.9]), k, v)
    torch.testing.assert_close(out, torch.tensor([[1.0, 10.0], [1.0, 10.0], [3.0, 30.0]]))


def test_polynomial_matches_numpy_polyfit():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(50, generator=g) * 12
    y = torch.sin(x) + 0.3 * torch.randn(50, generator=g)
    c = kr.fit_polynomial(x, y, 3)
    ref = np.polyfit(x.numpy(), y.numpy(), 3)[::-1].copy()
    torch.testing.assert_close(c, torch.from_numpy(ref), rtol=1e-8, atol=1e-10)
    xs = torch.linspace(0, 12, 7)
    torch.testing.assert_close(kr.eval_polynomial(c, xs), torch.from_numpy(np.polyval(ref[::-1], xs.numpy())))
    # exact recovery of a polynomial
    c2 = kr.fit_polynomial(x, 1 - 2 * x + 0.5 * x ** 2, 2)
    torch.testing.assert_close(c2, torch.tensor([1.0, -2.0, 0.5]), rtol=1e-8, atol=1e-8)
    assert kr.fit_polynomial(x.float(), y.float(), 3).dtype == torch.float32


def test_leave_one_out_mask_excludes_self():
    q, k, v = data(n=20, m=20)
    mask = kr.leave_one_out_mask(20)
    pred, w = kr.nadaraya_watson(k, k, v, 0.5, mask=mask)
    assert torch.diagonal(w).abs().max() == 0
    i = 7
    others = torch.arange(20) != i
    p_i, _ = kr.nadaraya_watson(k[i:i + 1], k[others], v[others], 0.5)
    torch.testing.assert_close(pred[i:i + 1], p_i)


def test_bandwidth_sweep():
    q, k, v = data()
    t = torch.randn(30, generator=torch.Generator().manual_seed(5))
    errs = kr.bandwidth_sweep([0.2, 1.0], q, t, k, v)
    for e, s in zip(errs, [0.2, 1.0]):
        torch.testing.assert_close(e, (kr.nadaraya_watson(q, k, v, s)[0] - t).pow(2).mean())


def test_module_gradient_and_training():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(80, generator=g) * 10
    y = torch.sin(x) + 0.3 * torch.randn(80, generator=g)
    model = kr.GaussianKernelRegression(sigma=2.0)
    assert math.isclose(float(model.sigma.detach()), 2.0)
    loss = model.loo_loss(x, y)
    loss.backward()
    # finite-difference check of d loss / d log_sigma
    eps = 1e-6
    f = lambda ls: float((kr.nadaraya_watson(x, x, y, math.exp(ls), mask=kr.leave_one_out_mask(80))[0] - y).pow(2).mean())
    ls = math.log(2.0)
    fd = (f(ls + eps) - f(ls - eps)) / (2 * eps)
    assert math.isclose(float(model.log_sigma.grad), fd, rel_tol=1e-5)
    hist = kr.train_bandwidth(model, x, y, steps=150, lr=0.05)
    assert len(hist["sigma"]) == 151 and hist["loss"][-1] < hist["loss"][0]
    # trained sigma sits near the minimum of the LOO curve
    sig = torch.logspace(-1.5, 0.5, 201)
    curve = kr.bandwidth_sweep(sig, x, y, x, y, mask=kr.leave_one_out_mask(80))
    assert hist["loss"][-1] <= float(curve.min()) + 1e-4
    # without leave-one-out the bandwidth collapses
    m2 = kr.GaussianKernelRegression(sigma=0.5)
    h2 = kr.train_bandwidth(m2, x, y, steps=100, lr=0.05, leave_one_out=False)
    assert h2["sigma"][-1] < 0.1 * h2["sigma"][0] and h2["loss"][-1] < 1e-2


def test_bad_input():
    q, k, v = data()
    for bad in (0.0, -1.0, float("inf"), float("nan"), torch.tensor(-0.5)):
        with pytest.raises(ValueError, match="sigma"):
            kr.nadaraya_watson(q, k, v, bad)
    with pytest.raises(ValueError, match="single number"):
        kr.nadaraya_watson(q, k, v, torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError):
        kr.nadaraya_watson(q, k, v, "1.0")
    with pytest.raises(ValueError, match="keys"):
        kr.nadaraya_watson(q, k, v[:-1], 1.0)
    with pytest.raises(ValueError, match="dimension"):
        kr.nadaraya_watson(torch.rand(4, 2), k, v, 1.0)
    with pytest.raises(TypeError):
        kr.nadaraya_watson(torch.arange(4), k, v, 1.0)
    with pytest.raises(ValueError, match="same length"):
        kr.fit_polynomial(torch.rand(5), torch.rand(6), 2)
    with pytest.raises(ValueError, match="at least"):
        kr.fit_polynomial(torch.rand(3), torch.rand(3), 3)
    with pytest.raises(ValueError, match="degree"):
        kr.fit_polynomial(torch.rand(5), torch.rand(5), -1)
    with pytest.raises(ValueError, match="at least 2"):
        kr.leave_one_out_mask(1)
    with pytest.raises(ValueError, match="sigma"):
        kr.GaussianKernelRegression(sigma=0.0)
    with pytest.raises(ValueError, match="same number"):
        kr.GaussianKernelRegression().loo_loss(torch.rand(5), torch.rand(4))
