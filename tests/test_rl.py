"""Tests of dlbook.rl: replay buffer, TD targets, losses, Polyak averaging, evaluation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlbook import rl


def test_replay_buffer_shapes_and_circularity():
    buf = rl.ReplayBuffer(5, obs_dim=3)
    for t in range(7):
        buf.add(np.full(3, t, np.float32), t % 2, float(t), np.full(3, t + 1, np.float32),
                t == 6)
    assert len(buf) == 5 and buf.pos == 2
    # positions 0 and 1 were overwritten by transitions 5 and 6
    assert buf.reward[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buf.terminated[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    batch = buf.sample(8, np.random.default_rng(0))
    assert batch.obs.shape == (8, 3) and batch.action.shape == (8, 1)
    assert batch.reward.shape == (8, 1) and batch.terminated.shape == (8, 1)
    assert batch.action.dtype == torch.int64
    assert torch.equal(batch.next_obs, batch.obs + 1)
    assert set(batch.reward[:, 0].tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}


def test_replay_buffer_bad_input():
    with pytest.raises(ValueError):
        rl.ReplayBuffer(0, obs_dim=3)
    buf = rl.ReplayBuffer(4, obs_dim=3)
    with pytest.raises(ValueError):
        buf.sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError):
        buf.add(np.zeros(2), 0, 0.0, np.zeros(3), False)


def test_td_target_terminated_vs_truncated():
    torch.manual_seed(0)
    q = rl.QNetwork(4, 2, (8,))
    next_obs = torch.randn(3, 4)
    reward = torch.tensor([[1.0], [2.0], [3.0]])
    # row 0: ordinary step; row 1: terminated; row 2: truncated (stored as not terminated)
    terminated = torch.tensor([[0.0], [1.0], [0.0]])
    y = rl.td_target(q, reward, next_obs, terminated, 0.9)
    best = q(next_obs).max(1).values.detach()
    expected = torch.tensor([1 + 0.9 * best[0], 2.0, 3 + 0.9 * best[2]])
    torch.testing.assert_close(y[:, 0], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        rl.td_target(q, reward[:, 0], next_obs, terminated[:, 0], 0.9)


def test_dqn_loss_equals_sb3_recipe():
    torch.manual_seed(1)
    q, qt = rl.QNetwork(4, 2, (16,)), rl.QNetwork(4, 2, (16,))
    b = rl.Batch(torch.randn(32, 4), torch.randint(0, 2, (32, 1)), torch.randn(32, 1),
                 torch.randn(32, 4), (torch.rand(32, 1) < 0.3).float())
    with torch.no_grad():
        nq = qt(b.next_obs).max(dim=1)[0].reshape(-1, 1)
        target = b.reward + (1 - b.terminated) * 0.99 * nq
    ref = F.smooth_l1_loss(torch.gather(q(b.obs), 1, b.action.long()), target)
    assert torch.equal(rl.dqn_loss(q, qt, b, 0.99), ref)


def test_polyak_update_matches_sb3_and_formula():
    from stable_baselines3.common.utils import polyak_update

    torch.manual_seed(2)
    a, b = rl.Critic(3, 1, (8,)), rl.Critic(3, 1, (8,))
    b2 = rl.Critic(3, 1, (8,))
    b2.load_state_dict(b.state_dict())
    before = [p.clone() for p in b.parameters()]
    rl.polyak_update(a.parameters(), b.parameters(), 0.1)
    polyak_update(a.parameters(), b2.parameters(), 0.1)
    for p, p2, old, src in zip(b.parameters(), b2.parameters(), before, a.parameters()):
        assert torch.equal(p, p2)
        torch.testing.assert_close(p, 0.9 * old + 0.1 * src, rtol=0, atol=1e-7)
    with pytest.raises(ValueError):
        rl.polyak_update(a.parameters(), b.parameters(), 1.5)


def test_evaluate_fixed_policy_matches_sb3():
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    def policy(obs):  # push towards the side the pole leans to
        return (obs[:, 2] > 0).astype(np.int64)

    ours = rl.evaluate(policy, "CartPole-v1", 6, seed=10)
    venv = DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1")) for _ in range(6)])
    venv.seed(10)
    ref, _ = evaluate_policy(rl.SB3Predictor(policy), venv, n_eval_episodes=6,
                             return_episode_rewards=True)
    assert sorted(ours.tolist()) == sorted(ref)
    assert ours.shape == (6,) and ours.max() <= 500
    with pytest.raises(ValueError):
        rl.evaluate(policy, "CartPole-v1", 0, seed=0)


def test_bad_configs_raise():
    with pytest.raises(ValueError):
        rl.DQNConfig(gamma=1.5)
    with pytest.raises(ValueError):
        rl.DQNConfig(batch_size=0)
    with pytest.raises(ValueError):
        rl.DQNConfig(exploration_final_eps=0.5, exploration_initial_eps=0.1)
    with pytest.raises(ValueError):
        rl.DDPGConfig(tau=0.0)
    with pytest.raises(TypeError):
        rl.train_dqn("CartPole-v1", rl.DDPGConfig())
    with pytest.raises(ValueError):
        rl.train_ddpg("CartPole-v1", rl.DDPGConfig())


def test_linear_epsilon_schedule():
    cfg = rl.DQNConfig(total_steps=1000, exploration_fraction=0.1)
    assert rl.linear_epsilon(0, cfg) == 1.0
    assert abs(rl.linear_epsilon(50, cfg) - (1 + 0.04) / 2) < 1e-12
    assert rl.linear_epsilon(100, cfg) == cfg.exploration_final_eps


def test_deterministic_policy_gradient_chain_rule():
    torch.manual_seed(3)
    actor = rl.Actor(3, 1, np.array([-2.0]), np.array([2.0]), (8,)).double()
    critic = rl.Critic(3, 1, (8,)).double()
    s = torch.randn(16, 3, dtype=torch.float64)
    loss = -critic(s, actor.forward_scaled(s)).mean()
    direct = torch.autograd.grad(loss, list(actor.parameters()))
    a = actor.forward_scaled(s)
    a_leaf = a.detach().requires_grad_(True)
    dq_da = torch.autograd.grad(critic(s, a_leaf).sum(), a_leaf)[0]
    chain = torch.autograd.grad(a, list(actor.parameters()), grad_outputs=-dq_da / 16)
    for g1, g2 in zip(direct, chain):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_short_trainings_run():
    r = rl.train_dqn("CartPole-v1", rl.DQNConfig(total_steps=300, learning_starts=100,
                                                 train_freq=50, gradient_steps=2),
                     seed=0, progress=False)
    assert len(r.episode_returns) == len(r.episode_ends) > 0
    d = rl.train_ddpg("Pendulum-v1", rl.DDPGConfig(total_steps=250, learning_starts=200,
                                                   hidden=(16,)), seed=0, progress=False)
    assert d.episode_ends == [200]
    out = rl.evaluate(rl.actor_policy(d.model), "Pendulum-v1", 2, seed=0)
    assert out.shape == (2,) and np.all(out <= 0)
    curve = rl.learning_curve([10, 20], [1.0, 3.0], np.array([5, 10, 25]), window=2)
    assert np.isnan(curve[0]) and curve[1] == 1.0 and curve[2] == 2.0
