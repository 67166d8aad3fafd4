"""Tests of dlbook.gan: losses and their gradients, the WGAN-GP penalty by hand, D* and the
JSD identity against scipy, the ring of Gaussians, the mode metric, models and bad input."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm

from dlbook import gan


# --- losses ------------------------------------------------------------------------------

def test_discriminator_loss_is_binary_cross_entropy():
    real, fake = torch.randn(7), torch.randn(7)
    expected = (F.binary_cross_entropy_with_logits(real, torch.ones(7))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros(7)))
    torch.testing.assert_close(gan.discriminator_loss(real, fake), expected)
    torch.testing.assert_close(gan.discriminator_loss(real[:, None], fake[:, None]), expected)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    v = d_real.log().mean() + (1 - d_fake).log().mean()           # V(D, G) on the batch
    torch.testing.assert_close(gan.discriminator_loss(real, fake), -v)


def test_generator_losses_and_their_gradients_in_the_logit():
    logits = torch.tensor([-12.0, -4.0, 0.0, 3.0], requires_grad=True)
    d = torch.sigmoid(logits.detach())
    mm = gan.generator_loss(logits, "minimax")
    torch.testing.assert_close(mm, (1 - d).log().mean())
    (g_mm,) = torch.autograd.grad(mm, logits)
    ns = gan.generator_loss(logits, "non-saturating")
    torch.testing.assert_close(ns, -d.log().mean())
    (g_ns,) = torch.autograd.grad(ns, logits)
    n = len(logits)
    torch.testing.assert_close(g_mm, -d / n)                     # vanishes as D -> 0
    torch.testing.assert_close(g_ns, -(1 - d) / n)               # stays near -1/n
    assert abs(g_mm[0]) < 1e-5 / n and abs(g_ns[0] + 1 / n) < 1e-5
    # no overflow for a very confident discriminator
    assert torch.isfinite(gan.generator_loss(torch.tensor([-200.0]), "non-saturating"))


def test_losses_reject_bad_input():
    with pytest.raises(ValueError, match="minimax"):
        gan.generator_loss(torch.zeros(3), "saturating")
    with pytest.raises(ValueError, match="differ in rank"):
        gan.discriminator_loss(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, 1\)"):
        gan.discriminator_loss(torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, 1\)"):
        gan.generator_loss(torch.zeros(0))
    with pytest.raises(TypeError):
        gan.generator_loss(np.zeros(3))


# --- WGAN-GP ----------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_by_hand():
    # C(x) = x w + b has gradient w everywhere: the penalty is (||w|| - 1)^2 for any alpha
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    gp = gan.gradient_penalty(lin, real, fake, generator=torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((5 - 1) ** 2)
    # the penalty keeps its graph: d gp / d w = 2 (||w|| - 1) w / ||w||
    gp.backward()
    torch.testing.assert_close(lin.weight.grad, 2 * 4 * torch.tensor([[3.0, 4.0]]) / 5)


def test_gradient_penalty_of_a_quadratic_critic_by_hand():
    # C(x) = ||x||^2 / 2 has gradient x: the penalty is mean (||x_hat|| - 1)^2
    def critic(x):
        return 0.5 * (x ** 2).sum(1)

    real = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    alpha = torch.tensor([0.25, 0.5])
    # x_hat = (0.5, 0), (0, 2): norms 0.5 and 2 -> ((0.5 - 1)^2 + (2 - 1)^2) / 2 = 0.625
    gp = gan.gradient_penalty(critic, real, fake, alpha=alpha)
    assert gp.item() == pytest.approx(0.625)
    images = torch.zeros(2, 1, 2, 2)                              # (n, C, H, W) batches too
    images[0, 0, 0, 0], images[1, 0, 1, 1] = 2.0, 4.0
    gp = gan.gradient_penalty(lambda x: 0.5 * (x ** 2).flatten(1).sum(1), images,
                              torch.zeros_like(images), alpha=torch.tensor([1.0, 0.5]))
    assert gp.item() == pytest.approx(((2 - 1) ** 2 + (2 - 1) ** 2) / 2)


def test_critic_loss_combines_the_terms():
    lin = torch.nn.Linear(2, 1)
    real, fake = torch.randn(32, 2), torch.randn(32, 2) + 1
    alpha = torch.rand(32)
    loss, estimate = gan.critic_loss(lin, real, fake, gp_weight=0.1, alpha=alpha)
    w = lin(real).mean() - lin(fake).mean()
    gp = gan.gradient_penalty(lin, real, fake, alpha=alpha)
    torch.testing.assert_close(loss, -w + 0.1 * gp)
    assert estimate.item() == pytest.approx(w.item()) and not estimate.requires_grad
    torch.testing.assert_close(gan.wasserstein_generator_loss(lin(fake)), -lin(fake).mean())


def test_gradient_penalty_rejects_bad_input():
    lin = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="one score per sample"):
        gan.gradient_penalty(lambda x: x, torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="batch_dims"):
        gan.gradient_penalty(lin, torch.randn(4, 2), torch.randn(4, 2), batch_dims=3)
    with pytest.raises(ValueError, match="same shape"):
        gan.gradient_penalty(lin, torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="alpha"):
        gan.gradient_penalty(lin, torch.randn(4, 2), torch.randn(4, 2), alpha=torch.rand(3))
    with pytest.raises(ValueError, match="gp_weight"):
        gan.critic_loss(lin, torch.randn(4, 2), torch.randn(4, 2), gp_weight=-1.0)


# --- D* and the Jensen-Shannon identity ------------------------------------------------

def grid_densities(shift=1.5):
    x = np.linspace(-8, 8, 4001)
    cell = x[1] - x[0]
    p = norm.pdf(x, 0, 1)
    q = 0.5 * norm.pdf(x, shift, 0.7) + 0.5 * norm.pdf(x, -shift, 1.3)
    return x, p / (p.sum() * cell), q / (q.sum() * cell), cell


def test_optimal_discriminator_and_the_jsd_identity_match_scipy():
    _, p, q, cell = grid_densities()
    d_star = gan.optimal_discriminator(p, q, cell)
    np.testing.assert_allclose(d_star, p / (p + q))
    jsd = gan.jensen_shannon(p, q, cell)
    # scipy returns sqrt(JSD) (natural log by default) of probability vectors
    assert jsd == pytest.approx(jensenshannon(p * cell, q * cell) ** 2, rel=1e-10)
    assert 0 < jsd < math.log(2)
    v_star = gan.value_function(d_star, p, q, cell)
    assert v_star == pytest.approx(2 * jsd - math.log(4), rel=1e-10)
    assert gan.optimal_value(p, q, cell) == pytest.approx(v_star, rel=1e-12)


def test_optimal_value_where_d_star_rounds_to_one():
    # q is positive but ~1e-300 next to p far out in the tail: D* rounds to 1 there
    x, p, _, cell = grid_densities()
    q = norm.pdf(x, 4.0, 0.1)
    q = q / (q.sum() * cell)
    d_star = gan.optimal_discriminator(p, q, cell)
    assert ((d_star == 1) & (q > 0)).any()
    assert gan.value_function(d_star, p, q, cell) == -math.inf
    jsd = jensenshannon(p * cell, q * cell) ** 2
    assert gan.optimal_value(p, q, cell) == pytest.approx(2 * jsd - math.log(4), rel=1e-10)


def test_optimal_discriminator_maximises_v():
    _, p, q, cell = grid_densities()
    d_star = gan.optimal_discriminator(p, q, cell)
    v_star = gan.value_function(d_star, p, q, cell)
    rng = np.random.default_rng(0)
    for _ in range(5):
        d = np.clip(d_star + 0.05 * rng.standard_normal(d_star.shape), 1e-6, 1 - 1e-6)
        assert gan.value_function(d, p, q, cell) < v_star
    assert gan.value_function(np.full_like(p, 0.5), p, q, cell) == pytest.approx(-math.log(4))


def test_jsd_limits_identical_and_disjoint():
    x, p, _, cell = grid_densities()
    assert gan.jensen_shannon(p, p, cell) == pytest.approx(0, abs=1e-12)
    v = gan.value_function(gan.optimal_discriminator(p, p, cell), p, p, cell)
    assert v == pytest.approx(-math.log(4))                        # the global minimum
    left = np.where(x < 0, 1.0, 0.0)
    right = np.where(x > 0, 1.0, 0.0)
    left, right = left / (left.sum() * cell), right / (right.sum() * cell)
    assert gan.jensen_shannon(left, right, cell) == pytest.approx(math.log(2))
    d_star = gan.optimal_discriminator(left, right, cell)
    assert d_star[x < 0].min() == 1 and d_star[x > 0].max() == 0 and d_star[x == 0] == 0.5
    assert gan.value_function(d_star, left, right, cell) == pytest.approx(0, abs=1e-12)


def test_density_helpers_reject_bad_input():
    _, p, q, cell = grid_densities()
    with pytest.raises(ValueError, match="not normalised"):
        gan.jensen_shannon(2 * p, q, cell)
    with pytest.raises(ValueError, match="not normalised"):
        gan.optimal_discriminator(p, q / 2, cell)
    bad = p.copy()
    bad[0] = -1e-3
    with pytest.raises(ValueError, match="non-negative"):
        gan.check_density(bad, cell)
    with pytest.raises(ValueError, match="different grids"):
        gan.jensen_shannon(p, q[:-1] / (q[:-1].sum() * cell), cell)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gan.value_function(np.full_like(p, 1.5), p, q, cell)
    with pytest.raises(ValueError, match="positive"):
        gan.check_density(p, 0.0)


# --- the ring and the mode metric --------------------------------------------------------

def test_ring_means_are_eight_distinct_points_on_the_circle():
    means = gan.ring_means(8, 2.0)
    assert means.shape == (8, 2)
    torch.testing.assert_close(means.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    gaps = torch.cdist(means, means) + 10 * torch.eye(8, dtype=torch.float64)
    assert gaps.min() == pytest.approx(2 * 2.0 * math.sin(math.pi / 8))   # no repeated endpoint
    with pytest.raises(ValueError):
        gan.ring_means(0)


def test_sample_ring_statistics():
    x = gan.sample_ring(40000, std=0.01, generator=torch.Generator().manual_seed(0))
    assert x.shape == (40000, 2) and x.dtype == torch.float32
    means = gan.ring_means().float()
    dist, mode = torch.cdist(x, means).min(1)
    freq = torch.bincount(mode, minlength=8).float() / len(x)
    assert (freq - 1 / 8).abs().max() < 0.01
    residual = x - means[mode]
    assert residual.std(0).sub(0.01).abs().max() < 5e-4
    report = gan.mode_metrics(x, gan.ring_means(), 0.01)
    assert report.modes_captured == 8
    assert report.high_quality == pytest.approx(1 - math.exp(-9 / 2), abs=0.005)  # chi_2 < 3


def test_mode_metric_on_constructed_samples():
    means = gan.ring_means()
    g = torch.Generator().manual_seed(0)
    near = means.repeat(100, 1) + 0.005 * torch.randn(800, 2, generator=g, dtype=torch.float64)
    report = gan.mode_metrics(near, means, 0.01)
    assert (report.modes_captured, report.high_quality) == (8, 1.0)
    assert report.counts == (100,) * 8 and report.modes == 8 and report.n_samples == 800
    assert report.kl_to_uniform == pytest.approx(0.0, abs=1e-12)
    one = means[3] + 0.005 * torch.randn(500, 2, generator=g, dtype=torch.float64)
    report = gan.mode_metrics(one, means, 0.01)
    assert report.modes_captured == 1 and report.high_quality == 1.0
    assert report.counts[3] == 500 and sum(report.counts) == 500
    assert report.kl_to_uniform == pytest.approx(math.log(8))
    off = 0.5 * means.repeat(50, 1) + 0.005 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    report = gan.mode_metrics(off, means, 0.01)                      # radius 1/2: no mode
    assert (report.modes_captured, report.high_quality) == (0, 0.0)
    assert math.isnan(report.kl_to_uniform)
    report = gan.mode_metrics(torch.cat([one, off[:500]]), means, 0.01)
    assert report.high_quality == pytest.approx(500 / 900)


def test_mode_metric_threshold_and_min_count():
    means = gan.ring_means()
    inside = means[[0]] + torch.tensor([[0.029, 0.0]], dtype=torch.float64)   # 2.9 std
    outside = means[[1]] + torch.tensor([[0.0, 0.031]], dtype=torch.float64)  # 3.1 std
    report = gan.mode_metrics(torch.cat([inside, outside]), means, 0.01)
    assert report.counts[0] == 1 and report.counts[1] == 0 and report.high_quality == 0.5
    assert gan.mode_metrics(inside, means, 0.01, min_count=2).modes_captured == 0
    assert gan.mode_metrics(outside, means, 0.01, threshold=3.2).modes_captured == 1


def test_mode_metric_rejects_bad_input():
    means = gan.ring_means()
    with pytest.raises(ValueError, match="NaN"):
        gan.mode_metrics(torch.tensor([[float("nan"), 0.0]]), means, 0.01)
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        gan.mode_metrics(torch.zeros(3, 2), torch.zeros(8, 3), 0.01)
    with pytest.raises(ValueError, match="non-empty"):
        gan.mode_metrics(torch.zeros(3), means, 0.01)
    with pytest.raises(ValueError, match="positive"):
        gan.mode_metrics(torch.zeros(3, 2), means, 0.0)
    with pytest.raises(ValueError, match="min_count"):
        gan.mode_metrics(torch.zeros(3, 2), means, 0.01, min_count=0)


# --- models and the 2-D loop -------------------------------------------------------------

def test_model_shapes():
    g, d = gan.mlp_generator(5, 16, 2), gan.mlp_discriminator(2, 16, 3)
    assert g(torch.randn(4, 5)).shape == (4, 2) and d(torch.randn(4, 2)).shape == (4, 1)
    assert g.config.sizes == (5, 16, 16, 2) and d.config.sizes == (2, 16, 16, 16, 1)
    cg, cd = gan.ConvGenerator(z_dim=8, width=4), gan.ConvDiscriminator(width=4)
    cg.apply(gan.dcgan_init)
    images = cg(torch.randn(3, 8))
    assert images.shape == (3, 1, 28, 28) and images.abs().max() <= 1
    assert cd(images).shape == (3,)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        cg(torch.randn(3, 9))
    with pytest.raises(ValueError, match=r"\(n, 1, 28, 28\)"):
        cd(torch.randn(3, 28, 28))


def test_dcgan_init():
    net = gan.ConvDiscriminator(width=8)
    net.apply(gan.dcgan_init)
    conv = net.net[0]
    assert conv.bias.abs().max() == 0 and abs(conv.weight.std().item() - 0.02) < 0.005


def test_ensemble_members_compute_what_the_mlps_compute():
    members = [gan.mlp_discriminator(2, 8, 2, activation=a) for a in ("relu",) * 3]
    ens = gan.EnsembleMLP(members)
    assert ens.size == 3
    x = torch.randn(3, 5, 2)
    out = ens(x)
    assert out.shape == (3, 5, 1)
    for s in range(3):
        torch.testing.assert_close(out[s], members[s](x[s]))
        torch.testing.assert_close(ens.member(s)(x[s]), members[s](x[s]))
    tanh = gan.EnsembleMLP([gan.mlp_generator(2, 4, 1, activation="tanh") for _ in range(2)])
    x = torch.randn(2, 3, 2)
    torch.testing.assert_close(tanh(x)[1], tanh.member(1)(x[1]))
    with pytest.raises(ValueError, match=r"\(3, n, 2\)"):
        ens(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="one layout"):
        gan.EnsembleMLP([gan.mlp_discriminator(2, 8, 2), gan.mlp_discriminator(2, 4, 2)])


def test_mlp_ensemble_reproduces_seeded_models():
    ens = gan.mlp_ensemble(lambda: gan.mlp_generator(2, 8, 1), [3, 7])
    torch.manual_seed(7)
    alone = gan.mlp_generator(2, 8, 1)
    torch.testing.assert_close(ens.weights[0][1], alone.weights[0].detach())


def test_ensemble_losses_are_per_member_and_independent():
    logits = torch.randn(3, 6)
    per_member = gan.generator_loss(logits)
    assert per_member.shape == (3,)
    torch.testing.assert_close(per_member[1], gan.generator_loss(logits[1]))
    torch.testing.assert_close(gan.discriminator_loss(logits, -logits)[2],
                               gan.discriminator_loss(logits[2], -logits[2]))
    # the ensemble's penalty equals each member's own penalty
    ens = gan.mlp_ensemble(lambda: gan.mlp_discriminator(2, 8, 2), [0, 1])
    real, fake, alpha = torch.randn(2, 10, 2), torch.randn(2, 10, 2), torch.rand(2, 10)
    gp = gan.gradient_penalty(ens, real, fake, alpha=alpha, batch_dims=2)
    for s in range(2):
        alone = gan.gradient_penalty(ens.member(s), real[s], fake[s], alpha=alpha[s])
        torch.testing.assert_close(gp[s], alone)
    # summing the members' losses gives member 0 the gradient it gets alone
    loss, _ = gan.critic_loss(ens, real, fake, 0.1, alpha=alpha, batch_dims=2)
    loss.sum().backward()
    m0 = ens.member(0)
    loss0, _ = gan.critic_loss(m0, real[0], fake[0], 0.1, alpha=alpha[0])
    loss0.backward()
    torch.testing.assert_close(ens.weights[1].grad[0], m0.weights[1].grad)


def tiny_run(objective, seed=0):
    g = gan.mlp_ensemble(lambda: gan.mlp_generator(2, 16, 1), [seed, seed + 1])
    d = gan.mlp_ensemble(lambda: gan.mlp_discriminator(2, 16, 1), [seed + 2, seed + 3])
    run = gan.train_2d(g, d, lambda n, gen: gan.sample_ring(n, generator=gen),
                       objective=objective, steps=6, batch_size=32,
                       critic_steps=2 if objective == "wgan-gp" else 1,
                       snapshot_steps=(0, 3, 6), n_fixed=10, seed=seed, progress=False)
    return run, g


@pytest.mark.parametrize("objective", gan.OBJECTIVES)
def test_train_2d_records_and_is_deterministic(objective):
    run, g = tiny_run(objective)
    assert run.d_loss.shape == run.g_loss.shape == (6, 2)
    assert torch.isfinite(run.d_loss).all() and torch.isfinite(run.g_loss).all()
    assert sorted(run.snapshots) == [0, 3, 6] and run.snapshots[6].shape == (2, 10, 2)
    assert not torch.equal(run.snapshots[0], run.snapshots[6])      # the generators moved
    again, _ = tiny_run(objective)
    assert torch.equal(run.d_loss, again.d_loss)
    assert torch.equal(run.snapshots[6], again.snapshots[6])
    assert gan.sample(g, 7, 2, torch.Generator().manual_seed(0)).shape == (2, 7, 2)
    assert gan.sample(g.member(0), 7, 2).shape == (7, 2)


def test_train_2d_learns_a_shifted_gaussian():
    # a generator that starts far off moves its samples towards a single Gaussian at (3, 0)
    g = gan.mlp_ensemble(lambda: gan.mlp_generator(2, 32, 2), [0])
    d = gan.mlp_ensemble(lambda: gan.mlp_discriminator(2, 32, 2), [1])
    target = torch.tensor([3.0, 0.0])
    real = lambda n, gen: target + 0.3 * torch.randn(n, 2, generator=gen)    # noqa: E731
    before = gan.sample(g, 500, 2, torch.Generator().manual_seed(0))[0].mean(0)
    gan.train_2d(g, d, real, objective="non-saturating", steps=300, batch_size=64,
                 lr_g=3e-3, lr_d=3e-3, seed=0, progress=False)
    after = gan.sample(g, 500, 2, torch.Generator().manual_seed(0))[0].mean(0)
    assert (after - target).norm() < 0.5 < (before - target).norm()


def test_train_2d_rejects_bad_arguments():
    g = gan.mlp_ensemble(lambda: gan.mlp_generator(2, 8, 1), [0, 1])
    d = gan.mlp_ensemble(lambda: gan.mlp_discriminator(2, 8, 1), [2, 3])
    real = lambda n, gen: gan.sample_ring(n, generator=gen)                  # noqa: E731
    with pytest.raises(ValueError, match="objective"):
        gan.train_2d(g, d, real, objective="wgan", steps=1)
    with pytest.raises(ValueError, match="snapshot"):
        gan.train_2d(g, d, real, objective="minimax", steps=2, snapshot_steps=[3])
    with pytest.raises(ValueError, match="positive"):
        gan.train_2d(g, d, real, objective="minimax", steps=0)
    with pytest.raises(TypeError, match="EnsembleMLP"):
        gan.train_2d(g.member(0), d.member(0), real, objective="minimax", steps=1)
    d3 = gan.mlp_ensemble(lambda: gan.mlp_discriminator(2, 8, 1), [2, 3, 4])
    with pytest.raises(ValueError, match="2 generators but 3"):
        gan.train_2d(g, d3, real, objective="minimax", steps=1)


def tiny_image_run(seed=0):
    torch.manual_seed(seed)
    g, d = gan.ConvGenerator(z_dim=8, width=4), gan.ConvDiscriminator(width=4)
    g.apply(gan.dcgan_init)
    d.apply(gan.dcgan_init)
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    run = gan.train_images(g, d, images, steps=5, batch_size=16, snapshot_steps=(0, 5),
                           n_fixed=6, seed=seed, progress=False)
    return run, g


def test_train_images_records_and_is_deterministic():
    run, g = tiny_image_run()
    assert len(run.d_loss) == len(run.g_loss) == len(run.d_real) == len(run.d_fake) == 5
    assert all(0 < v < 1 for v in run.d_real + run.d_fake)
    assert sorted(run.snapshots) == [0, 5] and run.snapshots[5].shape == (6, 1, 28, 28)
    assert not torch.equal(run.snapshots[0], run.snapshots[5])
    assert g.training                                   # sampling restored the mode
    again, _ = tiny_image_run()
    assert run.d_loss == again.d_loss and torch.equal(run.snapshots[5], again.snapshots[5])
    z = torch.randn(3, 8)
    torch.testing.assert_close(gan.sample(g, 3, 8, z=z), g.eval()(z))


def test_train_images_rejects_bad_input():
    g, d = gan.ConvGenerator(z_dim=8, width=4), gan.ConvDiscriminator(width=4)
    pixels = torch.randint(0, 256, (32, 1, 28, 28)).float()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        gan.train_images(g, d, pixels, steps=1, batch_size=8)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        gan.train_images(g, d, torch.zeros(32, 28, 28), steps=1, batch_size=8)
    with pytest.raises(ValueError, match="fewer than one batch"):
        gan.train_images(g, d, torch.zeros(4, 1, 28, 28), steps=1, batch_size=8)
    with pytest.raises(ValueError, match="steps"):
        gan.train_images(g, d, torch.zeros(32, 1, 28, 28), steps=0, batch_size=8)
