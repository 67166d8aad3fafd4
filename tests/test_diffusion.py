"""Tests of dlbook.diffusion: schedules against diffusers, the closed form against the chain,
the samplers against diffusers' DDPM and DDIM schedulers, models' shapes and gradients, the
energy distance, and bad input."""
import math

import pytest
import torch

from dlbook import diffusion as d


def toy_eps(x, t):
    """A fixed, smooth stand-in for a trained network (depends on x and t)."""
    return 0.1 * x + 1e-4 * t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


# --- schedules ---------------------------------------------------------------------------

def test_linear_schedule_values():
    s = d.linear_schedule()
    assert s.T == 1000 and s.betas.dtype == torch.float32
    assert math.isclose(float(s.betas[0]), 1e-4, rel_tol=1e-6)
    assert math.isclose(float(s.betas[-1]), 0.02, rel_tol=1e-6)
    torch.testing.assert_close(s.abar, torch.cumprod(1 - s.betas, 0))
    assert 3.5e-5 < float(s.abar[-1]) < 4.5e-5                       # abar_T ~ 4.0e-5
    torch.testing.assert_close(s.snr, s.abar / (1 - s.abar))
    assert float(s.abar_at(torch.tensor(-1))) == 1.0
    assert float(s.abar_at(torch.tensor(5))) == float(s.abar[5])


def test_cosine_schedule_follows_its_formula():
    s = d.cosine_schedule(T=100)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2       # noqa: E731
    for t in (0, 10, 50, 98):
        assert math.isclose(float(s.abar[t]), f((t + 1) / 100) / f(0), rel_tol=1e-4)
    assert float(s.betas.max()) <= 0.999 + 1e-6                      # the cap


def test_schedules_and_add_noise_equal_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(clip_sample=False)
    assert ref.config.num_train_timesteps == 1000 and ref.config.beta_schedule == "linear"
    s = d.linear_schedule()
    assert torch.equal(s.abar, ref.alphas_cumprod)                  # bit for bit, float32
    cos = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(d.cosine_schedule().abar, cos.alphas_cumprod,
                               rtol=1e-6, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    torch.testing.assert_close(d.q_sample(x0, t, s, eps), ref.add_noise(x0, eps, t))


# --- the forward chain ------------------------------------------------------------------

def test_closed_form_matches_the_simulated_chain():
    s = d.linear_schedule(T=100, beta_start=1e-3, beta_end=0.1)
    g = torch.Generator().manual_seed(1)
    n = 10000
    x0 = torch.tensor([1.5, -0.5]).expand(n, 2)
    chain = d.simulate_chain(x0, s, [19, 99], g)                    # (2, n, 2)
    for k, t in enumerate((19, 99)):
        abar = float(s.abar[t])
        mean, var = chain[k].mean(0), chain[k].var(0)
        torch.testing.assert_close(mean, math.sqrt(abar) * x0[0], atol=0.03, rtol=0)
        torch.testing.assert_close(var, torch.full((2,), 1 - abar), atol=0.04, rtol=0)


def test_timesteps_trailing_spacing():
    assert d.timesteps(1000, 1000).tolist() == list(range(999, -1, -1))
    assert d.timesteps(1000, 10).tolist() == list(range(999, 0, -100))
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(timestep_spacing="trailing")
    ref.set_timesteps(50)
    assert torch.equal(ref.timesteps, d.timesteps(1000, 50))


# --- samplers ---------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1000, 20])
def test_ddpm_sample_equals_diffusers(steps):
    diffusers = pytest.importorskip("diffusers")
    s = d.linear_schedule()
    ours = d.ddpm_sample(toy_eps, (6, 2), s, steps, generator=torch.Generator().manual_seed(0))
    ref = diffusers.DDPMScheduler(clip_sample=False, timestep_spacing="trailing")
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, generator=g)
    for t in ref.timesteps:
        x = ref.step(toy_eps(x, t.expand(6)), t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, atol=5e-3 if steps == 1000 else 1e-3, rtol=0)


def test_ddim_sample_equals_diffusers_and_ddpm_at_eta_one():
    diffusers = pytest.importorskip("diffusers")
    s = d.linear_schedule()
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    ours = d.ddim_sample(toy_eps, (6, 2), s, 50, x_T=x_T)
    ref = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    ref.set_timesteps(50)
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(toy_eps(x, t.expand(6)), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=0)
    # deterministic: the same x_T gives the same sample
    assert torch.equal(ours, d.ddim_sample(toy_eps, (6, 2), s, 50, x_T=x_T))
    a = d.ddim_sample(toy_eps, (6, 2), s, 50, eta=1.0, generator=torch.Generator().manual_seed(0))
    b = d.ddpm_sample(toy_eps, (6, 2), s, 50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


def test_ddim_with_the_exact_noise_of_gaussian_data():
    """For data N(0, I), q_t = N(0, I) at every t and the optimal prediction is
    eps*(x_t, t) = sqrt(1 - abar_t) x_t; the score is -x. One DDIM step from t to s then
    multiplies x by sqrt(abar_s abar_t) + sqrt((1 - abar_s)(1 - abar_t)) (<= 1)."""
    s = d.linear_schedule()
    exact = lambda x, t: x * (1 - s.abar[t]).sqrt()[:, None]         # noqa: E731
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    x = d.ddim_sample(exact, (4, 2), s, 10, x_T=x_T)
    ts = d.timesteps(1000, 10)
    a_t = s.abar_at(ts).double()
    a_s = s.abar_at(torch.cat([ts[1:], torch.tensor([-1])])).double()
    factor = ((a_s * a_t).sqrt() + ((1 - a_s) * (1 - a_t)).sqrt()).prod()
    torch.testing.assert_close(x, (factor * x_T.double()).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.score(exact, x_T, 999, s), -x_T)    # grad log N(0, I)


# --- models and training ----------------------------------------------------------------

def test_sinusoidal_embedding():
    e = d.sinusoidal_embedding(torch.tensor([0, 1, 999]), 16)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    torch.testing.assert_close(e[1, 0], torch.tensor(math.sin(1.0)))
    with pytest.raises(ValueError, match="even"):
        d.sinusoidal_embedding(torch.tensor([1]), 7)


def test_eps_mlp_and_unet_shapes_and_gradients():
    mlp = d.EpsMLP(hidden=16, depth=2, time_dim=8)
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    assert mlp(x, t).shape == (5, 2)
    torch.manual_seed(0)
    net = d.UNet(d.UNetConfig(channels=(8, 16), time_dim=16))
    img = torch.randn(3, 1, 28, 28)
    out = net(img, torch.tensor([0, 500, 999]))
    assert out.shape == img.shape
    loss = d.loss_simple(net, img, d.linear_schedule(), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    # the timestep reaches the output
    assert not torch.allclose(net(img, torch.zeros(3, dtype=torch.long)), out)


def test_training_lowers_the_loss_on_2d_data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(512, 2, generator=g) * 0.1 + torch.tensor([1.0, -1.0])
    model = d.EpsMLP(hidden=32, depth=2, time_dim=8)
    losses = d.train(model, data, d.linear_schedule(T=100), steps=150, batch_size=64,
                     lr=3e-3, progress=False)
    assert len(losses) == 150 and sum(losses[-30:]) / 30 < 0.8 * sum(losses[:30]) / 30


def test_energy_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    assert abs(d.energy_distance(a, b)) < 0.02
    assert d.energy_distance(a, b + 1.0) > 0.5
    # 1-D: 2 E|X-Y| - E|X-X'| - E|Y-Y'| for two point masses at 0 and 1 is 2
    assert math.isclose(d.energy_distance(torch.zeros(3, 1), torch.ones(3, 1)), 2.0)


# --- bad input --------------------------------------------------------------------------

def test_bad_input():
    s = d.linear_schedule(T=10)
    with pytest.raises(ValueError, match="T must be"):
        d.linear_schedule(T=0)
    with pytest.raises(ValueError, match="beta"):
        d.linear_schedule(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="beta"):
        d.Schedule(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="timesteps must lie"):
        d.q_sample(torch.zeros(2, 2), torch.tensor([0, 10]), s)
    with pytest.raises(TypeError, match="integers"):
        d.q_sample(torch.zeros(2, 2), torch.tensor([0.5, 1.0]), s)
    with pytest.raises(TypeError, match="floating"):
        d.q_sample(torch.zeros(2, 2, dtype=torch.long), torch.tensor([0, 1]), s)
    with pytest.raises(ValueError, match="steps must be"):
        d.ddim_sample(toy_eps, (2, 2), s, steps=11)
    with pytest.raises(ValueError, match="eta"):
        d.ddim_sample(toy_eps, (2, 2), s, steps=5, eta=2.0)
    with pytest.raises(ValueError, match="record"):
        d.simulate_chain(torch.zeros(2, 2), s, [5, 3])
    with pytest.raises(ValueError, match="multiple of groups"):
        d.UNetConfig(channels=(10, 20))
    with pytest.raises(TypeError, match="UNetConfig"):
        d.UNet((8, 16))
    with pytest.raises(ValueError, match="x must have"):
        d.EpsMLP()(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="steps and batch_size"):
        d.train(d.EpsMLP(), torch.zeros(4, 2), s, steps=0)
