"""Tests of dlbook.vae: the KL term and the densities against torch.distributions, the
ELBO and the importance-weighted bound against log p(x) computed by quadrature, active
units, the KL schedule, the training loop, the two gradient estimators and bad input."""
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from dlbook import vae
from dlbook.mlp import MLP


def tiny(z_dim=2, x_dim=6, hidden=(5,), seed=0, activation="tanh"):
    torch.manual_seed(seed)
    return vae.VAE(vae.VAEConfig(x_dim=x_dim, hidden=hidden, z_dim=z_dim, activation=activation))


def binary(n, d, seed=0):
    return torch.bernoulli(torch.full((n, d), 0.4), generator=torch.Generator().manual_seed(seed))


# --- densities and the KL term -----------------------------------------------------------

def test_gaussian_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(40, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(40, 7, generator=g, dtype=torch.float64)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = kl_divergence(q, p)
    torch.testing.assert_close(vae.gaussian_kl(mu, logvar, per_dim=True), expected)
    torch.testing.assert_close(vae.gaussian_kl(mu, logvar), expected.sum(-1))
    assert vae.gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0   # q = p


def test_densities_equal_torch_distributions():
    g = torch.Generator().manual_seed(1)
    logits = 8 * torch.randn(5, 9, generator=g, dtype=torch.float64)
    x = binary(5, 9).double()
    torch.testing.assert_close(vae.bernoulli_log_likelihood(logits, x),
                               Bernoulli(logits=logits).log_prob(x).sum(-1))
    # logits (k, n, D) broadcast against x (n, D)
    stacked = torch.stack([logits, -logits])
    assert vae.bernoulli_log_likelihood(stacked, x).shape == (2, 5)
    assert torch.isfinite(vae.bernoulli_log_likelihood(torch.tensor([[200.0, -200.0]]),
                                                       torch.tensor([[0.0, 1.0]]))).all()
    z, mu = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    logvar = torch.randn(5, 3, generator=g)
    torch.testing.assert_close(vae.gaussian_log_density(z, mu, logvar),
                               Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1))


def test_reparameterize_has_the_moments_of_q():
    mu, logvar = torch.tensor([1.0, -2.0]), torch.tensor([0.0, math.log(4.0)])
    eps = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0))
    z = vae.reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.02, rtol=0)


def test_densities_reject_bad_input():
    with pytest.raises(ValueError, match="binary"):
        vae.bernoulli_log_likelihood(torch.zeros(2, 3), torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="pixels"):
        vae.bernoulli_log_likelihood(torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="shape"):
        vae.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(TypeError):
        vae.gaussian_kl([0.0], [0.0])
    with pytest.raises(TypeError, match="floats"):
        vae.gaussian_kl(torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))


# --- binarisation ------------------------------------------------------------------------

def test_binarize_static_and_dynamic():
    gray = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    a, b = vae.binarize(gray, seed=3), vae.binarize(gray, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, vae.binarize(gray, seed=4))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.shape == gray.shape
    g = torch.Generator().manual_seed(0)
    first, second = vae.binarize(gray, generator=g), vae.binarize(gray, generator=g)
    assert not torch.equal(first, second)                     # a fresh draw every call
    many = vae.binarize(gray.expand(400, 300, 20).reshape(-1, 20), seed=0).reshape(400, 300, 20)
    torch.testing.assert_close(many.mean(0), gray, atol=0.1, rtol=0)   # E x = p
    assert vae.check_binary(a) is a


def test_binarize_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.binarize(torch.tensor([0.5, 255.0]))
    with pytest.raises(TypeError, match="floats"):
        vae.binarize(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not both"):
        vae.binarize(torch.rand(3), seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="binary"):
        vae.check_binary(torch.tensor([0.0, 0.3]))


# --- the model ---------------------------------------------------------------------------

def test_vae_shapes_and_forward_equal_to_the_mlp():
    model = tiny(z_dim=3, x_dim=784, hidden=(16, 8))
    x = binary(4, 784)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 3)
    torch.testing.assert_close(torch.cat([mu, logvar], 1), MLP.forward(model.encoder, x))
    z = torch.randn(5, 4, 3)
    assert model.decode(z).shape == (5, 4, 784)
    torch.testing.assert_close(model.decode(z[0]), MLP.forward(model.decoder, z[0]))
    torch.testing.assert_close(model.encode(x.reshape(4, 28, 28))[0], mu)   # images are flattened
    assert [w.shape for w in model.decoder.weights] == [(3, 8), (8, 16), (16, 784)]
    p = model.sample(6, torch.Generator().manual_seed(0))
    assert p.shape == (6, 784) and 0 <= p.min() and p.max() <= 1
    s = model.sample(6, torch.Generator().manual_seed(0), binary=True)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    relu = tiny(activation="relu")
    x = binary(3, 6)
    torch.testing.assert_close(torch.cat(relu.encode(x), 1), MLP.forward(relu.encoder, x))


def test_autoregressive_decoder_sees_earlier_pixels_only():
    torch.manual_seed(0)
    model = vae.VAE(vae.VAEConfig(x_dim=6, hidden=(5,), z_dim=2, autoregressive=True))
    with torch.no_grad():
        model.context.normal_()
    z, x = torch.randn(1, 2), binary(1, 6)
    base = model.decode(z, x)
    for j in range(6):                      # flipping pixel j moves the logits after j only
        flipped = x.clone()
        flipped[0, j] = 1 - flipped[0, j]
        moved = (model.decode(z, flipped) - base).abs()[0] > 0
        assert moved.tolist() == [i > j for i in range(6)]
    assert model.decode(torch.randn(4, 1, 2), x).shape == (4, 1, 6)     # k samples of z
    with pytest.raises(ValueError, match="needs the image"):
        model.decode(z)
    images = model.sample(5, torch.Generator().manual_seed(0), binary=True)
    assert images.shape == (5, 6) and set(images.unique().tolist()) <= {0.0, 1.0}
    terms = vae.elbo(model, binary(3, 6))
    assert terms.recon.shape == (3,)
    with pytest.raises(TypeError, match="bool"):
        vae.VAEConfig(autoregressive=1)


def test_vae_config_and_model_reject_bad_input():
    with pytest.raises(ValueError, match="positive ints"):
        vae.VAEConfig(z_dim=0)
    with pytest.raises(ValueError, match="positive ints"):
        vae.VAEConfig(hidden=[200])
    with pytest.raises(ValueError, match="activation"):
        vae.VAEConfig(activation="sigmoid")
    with pytest.raises(TypeError, match="VAEConfig"):
        vae.VAE({"z_dim": 2})
    model = tiny()
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        model.encode(torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        model.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)


# --- the ELBO and the importance-weighted bound ------------------------------------------

def log_marginal_by_quadrature(model, x):
    """log p(x) = log ∫ p(x|z) p(z) dz on a fine grid of the 1-D latent (float64)."""
    z = torch.linspace(-8, 8, 8001, dtype=torch.float64)[:, None]
    dz = float(z[1, 0] - z[0, 0])
    model = model.double()
    log_joint = (vae.bernoulli_log_likelihood(model.decode(z)[:, None, :], x.double())
                 + Normal(0.0, 1.0).log_prob(z))                       # (grid, n)
    return torch.logsumexp(log_joint, 0) + math.log(dz)


def test_elbo_and_iwae_bound_below_log_marginal_and_tightening_with_k():
    model = tiny(z_dim=1, x_dim=6, hidden=(8,))
    x = binary(3, 6).double()
    with torch.no_grad():
        log_px = log_marginal_by_quadrature(model, x)
        g = torch.Generator().manual_seed(0)
        bound = {k: torch.stack([vae.iwae_bound(model, x, k, g) for _ in range(400)]).mean(0)
                 for k in (1, 10, 100)}
        terms = vae.elbo(model, x, n_samples=20000, generator=g)
    # E L_1 is the ELBO (one estimates it by sampling, the other with the closed-form KL)
    torch.testing.assert_close(bound[1], terms.elbo, atol=0.05, rtol=0)
    assert torch.all(terms.elbo < log_px)
    assert torch.all(bound[1] < bound[10]) and torch.all(bound[10] < bound[100])
    assert torch.all(bound[100] < log_px + 1e-3)
    torch.testing.assert_close(bound[100], log_px, atol=0.02, rtol=0)  # nearly tight


def test_elbo_terms_by_hand():
    model = tiny()
    x = binary(4, 6)
    terms = vae.elbo(model, x, generator=torch.Generator().manual_seed(5))
    eps = torch.randn((1, 4, 2), generator=torch.Generator().manual_seed(5))
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps[0]
    expected = Bernoulli(logits=model.decode(z)).log_prob(x).sum(-1)
    torch.testing.assert_close(terms.recon, expected)
    torch.testing.assert_close(terms.kl, vae.gaussian_kl(mu, logvar))
    torch.testing.assert_close(terms.elbo, expected - terms.kl)
    assert terms.kl_per_dim.shape == (4, 2)
    terms.elbo.sum().backward()                                  # differentiable
    assert model.encoder.weights[0].grad is not None
    with pytest.raises(ValueError, match="binary"):
        vae.elbo(model, torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="positive int"):
        vae.iwae_bound(model, x, 0)


def test_evaluate_and_active_units():
    model = tiny(z_dim=3, x_dim=6, hidden=(8,))
    with torch.no_grad():                       # units 1 and 2 of mu ignore the image
        model.encoder.weights[-1][:, 1:3] = 0
    x = binary(200, 6)
    count, variances = vae.active_units(model, x)
    assert count == 1 and variances.shape == (3,) and variances[1:].max() == 0
    assert vae.active_units(model, x, threshold=variances[0].item() * 2)[0] == 0
    scores = vae.evaluate(model, x, k=50, seed=0)
    assert scores.n == 200 and scores.k == 50 and scores.active == 1
    assert scores.neg_elbo == pytest.approx(scores.recon + scores.kl)
    assert scores.nll < scores.neg_elbo and scores.nll_sem > 0     # the bound is tighter
    assert vae.evaluate(model, x).nll is None
    assert vae.evaluate(model, x, k=5, seed=1) == vae.evaluate(model, x, k=5, seed=1)
    with pytest.raises(ValueError, match="threshold"):
        vae.active_units(model, x, threshold=0)
    with pytest.raises(ValueError, match="two images"):
        vae.active_units(model, x[:1])
    with pytest.raises(ValueError, match="non-negative"):
        vae.evaluate(model, x, k=-1)
    with pytest.raises(ValueError, match="two images"):
        vae.evaluate(model, x[:1])


# --- the KL schedule and training --------------------------------------------------------

def test_kl_schedule_weight_and_free_bits():
    assert vae.KLSchedule().weight(1) == 1.0
    warm = vae.KLSchedule(beta=4.0, warmup=10)
    assert [warm.weight(t) for t in (1, 5, 10, 50)] == [0.4, 2.0, 4.0, 4.0]
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 4.0, 0.0]], requires_grad=True)
    assert vae.KLSchedule(beta=2.0).penalty(kl, 1).item() == pytest.approx(2 * (0.2 + 3.0))
    free = vae.KLSchedule(free_bits=0.5).penalty(kl, 1)
    assert free.item() == pytest.approx(0.5 + 3.0 + 0.5)
    free.backward()              # below the free bits, a dimension gets no KL gradient
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]]))
    for bad in (dict(beta=-1.0), dict(beta=math.inf), dict(warmup=2.5), dict(free_bits=-0.1)):
        with pytest.raises(ValueError):
            vae.KLSchedule(**bad)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        vae.KLSchedule().penalty(torch.zeros(3), 1)


def test_train_lowers_the_loss_deterministically():
    gray = torch.rand(64, 6, generator=torch.Generator().manual_seed(0)) * 0.3
    gray[:32] += 0.7 - 0.3 * gray[:32]                 # two kinds of image
    val = vae.binarize(gray, seed=1)

    def run(seed):
        model = tiny(seed=0)
        return model, vae.train(model, gray, epochs=15, batch_size=16, lr=1e-2, val=val,
                                seed=seed, progress=False)

    model, record = run(0)
    assert len(record.loss) == len(record.val_active) == 15 and record.steps == 60
    assert record.neg_elbo[-1] < record.neg_elbo[0] and record.val_neg_elbo[-1] < record.val_neg_elbo[0]
    assert record.beta == [1.0] * 15 and record.loss == pytest.approx(record.neg_elbo)
    assert run(0)[1].val_neg_elbo == record.val_neg_elbo and run(1)[1].loss != record.loss
    assert not model.training
    annealed = vae.train(tiny(), gray, epochs=2, batch_size=16, progress=False,
                         schedule=vae.KLSchedule(beta=2.0, warmup=8))
    assert annealed.beta == [1.0, 2.0]
    static = vae.train(tiny(), val, epochs=1, batch_size=16, dynamic=False, progress=False)
    assert len(static.loss) == 1


def test_train_rejects_bad_input():
    model, gray = tiny(), torch.rand(20, 6)
    with pytest.raises(ValueError, match="binary"):
        vae.train(model, gray, epochs=1, batch_size=4, dynamic=False, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.train(model, gray * 255, epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="fewer than one batch"):
        vae.train(model, gray, epochs=1, batch_size=40, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        vae.train(model, gray, epochs=0, progress=False)
    with pytest.raises(TypeError, match="KLSchedule"):
        vae.train(model, gray, epochs=1, batch_size=4, schedule=2.0, progress=False)
    with pytest.raises(ValueError, match="binary"):
        vae.train(model, gray, epochs=1, batch_size=4, val=gray, progress=False)


# --- gradient estimators -----------------------------------------------------------------

def test_both_estimators_are_unbiased_and_reparam_has_lower_variance():
    # f(z) = ||z - a||^2: E_q f = ||mu - a||^2 + sum_j sigma_j^2, so the exact gradients are
    # 2 (mu - a) in mu and sigma^2 in log sigma^2
    a = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    mu = torch.tensor([0.2, 0.3, -0.4], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.5], dtype=torch.float64)

    def f(z):
        return (z - a).square().sum(-1)

    exact_mu, exact_lv = 2 * (mu - a), logvar.exp()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for estimator in (vae.reparam_gradients, vae.score_function_gradients):
        g_mu, g_lv = estimator(f, mu, logvar, n, g)
        assert g_mu.shape == g_lv.shape == (n, 3)
        for est, exact in ((g_mu, exact_mu), (g_lv, exact_lv)):
            z_scores = (est.mean(0) - exact) / (est.std(0) / math.sqrt(n))
            assert z_scores.abs().max() < 5
    rp, sf = vae.reparam_gradients(f, mu, logvar, n, g), vae.score_function_gradients(f, mu, logvar, n, g)
    assert torch.all(rp[0].var(0) < sf[0].var(0)) and torch.all(rp[1].var(0) < sf[1].var(0))
    torch.testing.assert_close(rp[0].var(0), 4 * logvar.exp(), rtol=0.02, atol=0)  # 4 sigma^2
    # a baseline keeps the mean and lowers the variance
    fair = vae.score_function_gradients(f, mu, logvar, n, g, baseline=float(f(mu[None]) + 1.7))
    assert ((fair[0].mean(0) - exact_mu) / (fair[0].std(0) / math.sqrt(n))).abs().max() < 5
    assert torch.all(fair[0].var(0) < sf[0].var(0))


def test_estimators_reject_bad_input():
    mu, logvar = torch.zeros(2), torch.zeros(2)
    with pytest.raises(ValueError, match=r"\(S,\)"):
        vae.reparam_gradients(lambda z: z, mu, logvar, 10)
    with pytest.raises(ValueError, match=r"\(d,\)"):
        vae.score_function_gradients(lambda z: z.sum(-1), torch.zeros(2, 2), torch.zeros(2, 2), 10)
    with pytest.raises(ValueError, match="positive int"):
        vae.reparam_gradients(lambda z: z.sum(-1), mu, logvar, 0)


# --- pictures ----------------------------------------------------------------------------

def test_normal_grid_and_interpolation():
    grid = vae.normal_grid(5)
    assert grid.shape == (25, 2)
    levels = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 5))
    torch.testing.assert_close(grid[:5, 0], levels)                    # first row: z1 rises
    torch.testing.assert_close(grid[::5, 1], levels.flip(0))           # down the rows: z2 falls
    with pytest.raises(ValueError):
        vae.normal_grid(1)
    with pytest.raises(ValueError):
        vae.normal_grid(4, low=0.0)
    model = tiny()
    x = binary(2, 6)
    path = vae.interpolate(model, x[0], x[1], steps=7)
    mu, _ = model.encode(x)
    assert path.shape == (7, 6)
    torch.testing.assert_close(path[[0, -1]], model.probabilities(mu))
    with pytest.raises(ValueError, match="steps"):
        vae.interpolate(model, x[0], x[1], steps=1)
