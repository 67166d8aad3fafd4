"""Tests of dlbook.privacy: mechanisms, DP-SGD pieces and the RDP accountant."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dlbook import privacy as P


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _batch(n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_per_sample_grads_equal_a_loop_over_samples():
    model, (x, y) = _mlp(), _batch()
    grads = P.per_sample_grads(model, nn.functional.cross_entropy, x, y)
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name, p in model.named_parameters():
            assert grads[name].shape == (len(x), *p.shape)
            torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-5, atol=1e-7)


def test_clipping_bounds_norms_and_hooks_equal_vmap():
    model, (x, y) = _mlp(), _batch(16)
    grads = P.per_sample_grads(model, nn.functional.cross_entropy, x, y)
    norms = P.per_sample_norms(grads)
    f = P.clip_factors(norms, 0.3)
    assert (f * norms <= 0.3 + 1e-6).all() and (f <= 1).all()
    summed = P.clip_and_sum(grads, 0.3)
    fast, fast_norms, _ = P.linear_clipped_sum(model, x, y, 0.3)
    torch.testing.assert_close(fast_norms, norms, rtol=1e-5, atol=1e-6)
    for name in summed:
        torch.testing.assert_close(fast[name], summed[name], rtol=1e-5, atol=1e-6)


def test_noise_has_std_sigma_c_over_b():
    zero = {"w": torch.zeros(200, 100, dtype=torch.float64)}
    out = P.noisy_average(zero, 2.0, 1.5, 50, torch.Generator().manual_seed(0))["w"]
    assert abs(out.std().item() - 1.5 * 2.0 / 50) < 5 * 0.06 / math.sqrt(2 * 2e4)


def test_equals_opacus_aggregated_gradient():
    from opacus import PrivacyEngine

    model, (x, y) = _mlp(), _batch(16)
    ref = _mlp()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=16)
    opt = torch.optim.SGD(ref.parameters(), lr=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, opt, loader = PrivacyEngine(accountant="rdp").make_private(
            module=ref, optimizer=opt, data_loader=loader, noise_multiplier=0.0,
            max_grad_norm=0.5, poisson_sampling=False)
        xb, yb = next(iter(loader))
        nn.functional.cross_entropy(module(xb), yb).backward()
        opt.step()
    mine, _, _ = P.linear_clipped_sum(model, x, y, 0.5)
    for name, p in module.named_parameters():
        key = name.replace("_module.", "")
        torch.testing.assert_close(p.grad, mine[key] / 16, rtol=0, atol=1e-6)


@pytest.mark.parametrize("q,sigma,steps", [(0.004, 1.1, 15000), (0.01, 1.0, 1000),
                                           (0.1, 2.0, 300), (256 / 60000, 0.6, 7031)])
def test_accountant_equals_opacus(q, sigma, steps):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    assert P.dp_sgd_epsilon(q, sigma, steps, 1e-5) == pytest.approx(
        acc.get_epsilon(1e-5), rel=1e-9)


def test_classic_conversion_is_looser_and_reproduces_tf_privacy():
    q, steps = 256 / 60000, 60 * 60000 // 256
    classic = P.dp_sgd_epsilon(q, 1.12, steps, 1e-5, conversion="classic")
    assert round(classic, 2) == 2.92
    assert P.dp_sgd_epsilon(q, 1.12, steps, 1e-5) < classic


def test_rdp_full_batch_is_gaussian():
    rdp = P.rdp_sampled_gaussian(1.0, 2.0, [2, 3.5], steps=3)
    np.testing.assert_allclose(rdp, 3 * np.array([2, 3.5]) / 8)


def test_laplace_sampler_shape_and_scale():
    out = P.laplace_mechanism(3.0, 2.0, 0.5, 200000, torch.Generator().manual_seed(0))
    assert out.shape == (200000,) and out.dtype == torch.float64
    b = 4.0
    assert abs((out - 3.0).abs().mean().item() - b) < 5 * b / math.sqrt(200000)
    assert abs(out.median().item() - 3.0) < 0.05


def test_snapping_output_on_the_grid():
    u = 1 - torch.rand(10000, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    s = torch.where(torch.rand(10000) < 0.5, -1.0, 1.0).double()
    lam = P.snapping_grid(1.5)
    assert lam == 2.0 and P.snapping_grid(2.0) == 2.0
    out = P.snapping_mechanism(0.3, 1.5, 10.0, u, s)
    assert torch.equal(out, torch.round(out / lam) * lam)
    assert out.abs().max() <= 10.0


def test_naive_sampler_support_depends_on_input():
    u = (torch.arange(1, 2**12 + 1, dtype=torch.float64) / 2**12).float()
    one = torch.ones_like(u)
    a = set(P.naive_laplace(0.0, 2.0, u, one).tolist())
    b = set(P.naive_laplace(1.0, 2.0, u, one).tolist())
    assert len(a - b) > len(a) // 2


def test_bad_input_raises():
    with pytest.raises(ValueError):
        P.laplace_mechanism(0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        P.laplace_mechanism(0.0, 1.0, -1.0)
    for delta in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            P.dp_sgd_epsilon(0.01, 1.0, 10, delta)
    with pytest.raises(ValueError):
        P.clip_factors(torch.ones(3), 0.0)
    with pytest.raises(ValueError):
        P.linear_clipped_sum(_mlp(), *_batch(), -1.0)
    with pytest.raises(ValueError):
        P.epsilon_from_rdp([2.0], [0.1], 1e-5, conversion="other")
    with pytest.raises(TypeError):
        P.laplace_mechanism(0.0, "1", 1.0)
