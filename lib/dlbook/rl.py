"""Deep reinforcement learning (chapter 19): DQN and DDPG from scratch, and evaluation.

**DQN** (Mnih et al. 2015) learns action values ``Q_θ(s, ·)``, an MLP
``(n, obs_dim) -> (n, n_actions)``, from transitions ``(s, a, r, s', terminated)`` drawn
uniformly from a replay buffer (:class:`ReplayBuffer`), regressing on the TD target of a
slowly updated copy ``Q_θ⁻`` (the target network, :func:`td_target`)

    y = r + γ (1 - terminated) max_a' Q_θ⁻(s', a'),

with the Huber loss ``L = mean_i huber(Q_θ(s_i, a_i) - y_i)`` (:func:`dqn_loss`, the
loss of Stable-Baselines3). Only a *terminated* episode has a next value of zero; an
episode *truncated* by a time limit is bootstrapped from ``s'`` like any other step.
:func:`train_dqn` runs ε-greedy exploration with a linear schedule
(:func:`linear_epsilon`) and the update schedule of SB3 (``train_freq`` environment
steps, then ``gradient_steps`` updates; the target copied every
``target_update_interval`` environment steps). Its config is :class:`DQNConfig`.

**DDPG** (Lillicrap et al. 2016), built on the deterministic policy gradient of Silver
et al. (2014), learns an actor ``μ_φ(s)`` in the action box and a critic ``Q_θ(s, a)``.
The critic regresses on ``y = r + γ (1 - terminated) Q_θ'(s', μ_φ'(s'))``; the actor
ascends ``Q_θ(s, μ_φ(s))``, whose gradient is ``∇_φ μ_φ(s)ᵀ ∇_a Q_θ(s, a)|_{a=μ_φ(s)}``
(:func:`ddpg_update`). Target networks follow by Polyak averaging
``θ' <- (1 - τ) θ' + τ θ`` (:func:`polyak_update`), exploration adds Gaussian noise to
the action. :func:`train_ddpg` with :class:`DDPGConfig`.

:func:`evaluate` runs a policy (a function from a batch of observations ``(n, obs_dim)``
to a batch of actions) on ``n_episodes`` copies of an environment in lockstep, episode
``k`` reset with seed ``seed + k``, and returns the undiscounted returns.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Policy = Callable[[np.ndarray], np.ndarray]


class Batch(NamedTuple):
    """A batch of transitions: ``obs``/``next_obs`` (n, obs_dim), ``action`` (n, 1)
    (int64 for discrete actions, else (n, act_dim) float32), ``reward`` (n, 1),
    ``terminated`` (n, 1) in {0, 1}."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """A circular buffer of the last ``capacity`` transitions, sampled uniformly.

    ``add`` writes at position ``t mod capacity``, so the oldest transition is
    overwritten once the buffer is full; ``sample`` draws ``batch_size`` indices with
    replacement (as SB3 does) from the filled part. Only ``terminated`` is stored:
    a truncated step is an ordinary transition for the TD target.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int = 1,
                 discrete: bool = True) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if obs_dim < 1 or action_dim < 1:
            raise ValueError("obs_dim and action_dim must be positive")
        self.capacity, self.discrete = capacity, discrete
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.int64 if discrete else np.float32)
        self.reward = np.zeros((capacity, 1), np.float32)
        self.terminated = np.zeros((capacity, 1), np.float32)
        self.pos, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        """Store one transition (obs and next_obs of shape (obs_dim,))."""
        if np.shape(obs) != self.obs.shape[1:] or np.shape(next_obs) != self.obs.shape[1:]:
            raise ValueError(f"obs must have shape {self.obs.shape[1:]}, got "
                             f"{np.shape(obs)} and {np.shape(next_obs)}")
        i = self.pos
        self.obs[i], self.next_obs[i] = obs, next_obs
        self.action[i] = action
        self.reward[i], self.terminated[i] = reward, float(terminated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator,
               device: str | torch.device = "cpu") -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        t = lambda a: torch.as_tensor(a[idx], device=device)  # noqa: E731
        return Batch(t(self.obs), t(self.action), t(self.reward), t(self.next_obs),
                     t(self.terminated))


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU layers ``in_dim -> hidden... -> out_dim`` (no output activation),
    the layout of SB3's ``create_mlp``."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """``Q_θ(s, ·)``: an MLP ``(n, obs_dim) -> (n, n_actions)``."""

    def __init__(self, obs_dim: int, n_actions: int,
                 hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def td_target(q_target: nn.Module, reward: torch.Tensor, next_obs: torch.Tensor,
              terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """``y = r + γ (1 - terminated) max_a' Q⁻(s', a')``, shape (n, 1), no gradient.

    ``reward`` and ``terminated`` have shape (n, 1); truncated steps have
    ``terminated = 0`` and are bootstrapped.
    """
    if reward.shape != terminated.shape or reward.dim() != 2 or reward.shape[1] != 1:
        raise ValueError(f"reward and terminated must be (n, 1), got "
                         f"{tuple(reward.shape)} and {tuple(terminated.shape)}")
    with torch.no_grad():
        next_q = q_target(next_obs).max(dim=1, keepdim=True).values
        return reward + (1.0 - terminated) * gamma * next_q


def dqn_loss(q_net: nn.Module, q_target: nn.Module, batch: Batch,
             gamma: float) -> torch.Tensor:
    """Mean Huber loss (δ = 1) between ``Q_θ(s, a)`` and :func:`td_target`."""
    target = td_target(q_target, batch.reward, batch.next_obs, batch.terminated, gamma)
    q = q_net(batch.obs).gather(1, batch.action.long())
    return F.smooth_l1_loss(q, target)


def _check_positive_ints(cfg, names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every named field of ``cfg`` is an int >= 1."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass
class DQNConfig:
    """DQN hyper-parameters; the defaults are rl-baselines3-zoo's for CartPole-v1.

    ``target_network=False`` computes the TD target with the online network itself
    (the ablation without a target network); ``buffer_size = batch_size`` with small
    ``train_freq`` is the ablation without replay.
    """

    total_steps: int = 50_000
    lr: float = 2.3e-3
    batch_size: int = 64
    buffer_size: int = 100_000
    learning_starts: int = 1000
    gamma: float = 0.99
    target_update_interval: int = 10
    train_freq: int = 256
    gradient_steps: int = 128
    exploration_fraction: float = 0.16
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.04
    hidden: tuple[int, ...] = (256, 256)
    max_grad_norm: float = 10.0
    target_network: bool = True

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("total_steps", "batch_size", "buffer_size",
                                    "target_update_interval", "train_freq",
                                    "gradient_steps"))
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 < self.exploration_fraction <= 1.0:
            raise ValueError("exploration_fraction must lie in (0, 1]")
        if not 0.0 <= self.exploration_final_eps <= self.exploration_initial_eps <= 1.0:
            raise ValueError("need 0 <= exploration_final_eps <= initial_eps <= 1")
        if self.lr <= 0 or self.max_grad_norm <= 0 or self.learning_starts < 0:
            raise ValueError("lr and max_grad_norm must be > 0, learning_starts >= 0")


def linear_epsilon(step: int, cfg: DQNConfig) -> float:
    """ε falls linearly from the initial to the final value over the first
    ``exploration_fraction · total_steps`` steps, then stays (SB3's schedule)."""
    progress = step / (cfg.exploration_fraction * cfg.total_steps)
    if progress >= 1.0:
        return cfg.exploration_final_eps
    return cfg.exploration_initial_eps + progress * (cfg.exploration_final_eps
                                                     - cfg.exploration_initial_eps)


@dataclass
class TrainResult:
    """A trained network, the training episodes' returns and the environment step at
    which each ended, and the wall time in seconds."""

    model: nn.Module
    episode_returns: list[float] = field(default_factory=list)
    episode_ends: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _progress(total: int, desc: str | None, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not show,
                mininterval=1.0)


def train_dqn(env_id: str, cfg: DQNConfig, seed: int = 0, *, desc: str | None = None,
              progress: bool = True) -> TrainResult:
    """DQN on a gymnasium environment with a discrete action space (one environment).

    Random actions for the first ``learning_starts`` steps, then ε-greedy; every
    ``train_freq`` steps after ``learning_starts``, ``gradient_steps`` Adam updates of
    :func:`dqn_loss` on batches from the buffer, gradients clipped to norm
    ``max_grad_norm``; the target network copied every ``target_update_interval``
    steps. Returns the online network (in eval mode, on the CPU).
    """
    import gymnasium as gym

    if not isinstance(cfg, DQNConfig):
        raise TypeError(f"cfg must be a DQNConfig, got {type(cfg).__name__}")
    env = gym.make(env_id)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"{env_id} does not have a discrete action space")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs_dim, n_actions = env.observation_space.shape[0], int(env.action_space.n)
    q_net = QNetwork(obs_dim, n_actions, cfg.hidden)
    q_target = copy.deepcopy(q_net) if cfg.target_network else q_net
    optimizer = torch.optim.Adam(q_net.parameters(), lr=cfg.lr)
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim)
    result = TrainResult(q_net)
    begin = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    bar = _progress(cfg.total_steps, desc, progress)
    for step in range(cfg.total_steps):
        eps = linear_epsilon(step, cfg)
        if step < cfg.learning_starts or rng.random() < eps:
            action = int(env.action_space.sample())
        else:
            with torch.no_grad():
                action = int(q_net(torch.as_tensor(obs)[None]).argmax())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, terminated)
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            result.episode_returns.append(episode_return)
            result.episode_ends.append(step + 1)
            obs, _ = env.reset()
            episode_return = 0.0
        if cfg.target_network and (step + 1) % cfg.target_update_interval == 0:
            q_target.load_state_dict(q_net.state_dict())
        if step + 1 > cfg.learning_starts and (step + 1) % cfg.train_freq == 0:
            for _ in range(cfg.gradient_steps):
                loss = dqn_loss(q_net, q_target, buffer.sample(cfg.batch_size, rng),
                                cfg.gamma)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(q_net.parameters(), cfg.max_grad_norm)
                optimizer.step()
        bar.update(1)
    bar.close()
    env.close()
    result.seconds = time.perf_counter() - begin
    q_net.eval()
    return result


def greedy_policy(q_net: nn.Module) -> Policy:
    """The policy ``s -> argmax_a Q(s, a)`` on a batch of observations (n, obs_dim)."""
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return q_net(torch.as_tensor(obs, dtype=torch.float32)).argmax(1).numpy()
    return act


def evaluate(policy: Policy, env_id: str, n_episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of ``n_episodes`` episodes, shape (n_episodes,).

    Episode ``k`` runs in its own copy of ``gymnasium.make(env_id)``, reset with seed
    ``seed + k``; all copies step in lockstep, so that ``policy`` is called on a batch
    ``(n_alive, obs_dim)`` and returns ``(n_alive,)`` or ``(n_alive, act_dim)``
    actions. An episode ends when it terminates or is truncated by the time limit.
    """
    import gymnasium as gym

    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    if not callable(policy):
        raise TypeError("policy must be a callable from observations to actions")
    envs = [gym.make(env_id) for _ in range(n_episodes)]
    obs = np.stack([e.reset(seed=seed + k)[0] for k, e in enumerate(envs)])
    returns = np.zeros(n_episodes)
    alive = np.arange(n_episodes)
    while alive.size:
        actions = np.asarray(policy(obs[alive]))
        if actions.shape[0] != alive.size:
            raise ValueError(f"policy returned {actions.shape[0]} actions for "
                             f"{alive.size} observations")
        still = []
        for a, k in zip(actions, alive):
            o, r, terminated, truncated, _ = envs[k].step(a)
            returns[k] += float(r)
            obs[k] = o
            if not (terminated or truncated):
                still.append(k)
        alive = np.array(still, dtype=int)
    for e in envs:
        e.close()
    return returns


class SB3Predictor:
    """Wrap a batched policy as an object with SB3's ``predict`` (for
    ``stable_baselines3.common.evaluation.evaluate_policy``)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.asarray(self.policy(observation)), state


# ----------------------------------------------------------------------------- DDPG
class Actor(nn.Module):
    """``μ_φ(s)``: an MLP with tanh output, mapped affinely onto the box
    ``[low, high]``; ``(n, obs_dim) -> (n, act_dim)``. ``forward_scaled`` gives the
    tanh output in ``[-1, 1]`` (the scale SB3 stores in its buffer)."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 hidden: Sequence[int] = (400, 300)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward_scaled(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def unscale(self, a: torch.Tensor) -> torch.Tensor:
        """Map ``[-1, 1]`` onto ``[low, high]``."""
        return self.low + 0.5 * (a + 1.0) * (self.high - self.low)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.unscale(self.forward_scaled(obs))


class Critic(nn.Module):
    """``Q_θ(s, a)``: an MLP on the concatenation ``(n, obs_dim + act_dim) -> (n, 1)``;
    ``a`` is the action in the scaled box ``[-1, 1]``."""

    def __init__(self, obs_dim: int, act_dim: int,
                 hidden: Sequence[int] = (400, 300)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=1))


def polyak_update(params, target_params, tau: float) -> None:
    """In place, ``θ' <- (1 - τ) θ' + τ θ`` for each pair of tensors (no gradient)."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    params, target_params = list(params), list(target_params)
    if len(params) != len(target_params):
        raise ValueError("params and target_params must have the same length")
    with torch.no_grad():
        for p, tp in zip(params, target_params):
            if p.shape != tp.shape:
                raise ValueError(f"shape mismatch {tuple(p.shape)} vs {tuple(tp.shape)}")
            tp.mul_(1.0 - tau)
            tp.add_(p, alpha=tau)


@dataclass
class DDPGConfig:
    """DDPG hyper-parameters; defaults are rl-baselines3-zoo's for Pendulum-v1
    (batch 256 and τ = 0.005 are SB3's defaults). ``noise_std`` is the standard
    deviation of the Gaussian action noise in the scaled box ``[-1, 1]``."""

    total_steps: int = 20_000
    lr: float = 1e-3
    batch_size: int = 256
    buffer_size: int = 200_000
    learning_starts: int = 10_000
    gamma: float = 0.98
    tau: float = 0.005
    noise_std: float = 0.1
    train_freq: int = 1
    gradient_steps: int = 1
    hidden: tuple[int, ...] = (400, 300)

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("total_steps", "batch_size", "buffer_size",
                                    "train_freq", "gradient_steps"))
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("gamma must lie in [0, 1] and tau in (0, 1]")
        if self.lr <= 0 or self.noise_std < 0 or self.learning_starts < 0:
            raise ValueError("lr must be > 0, noise_std and learning_starts >= 0")


def ddpg_update(actor: Actor, critic: Critic, actor_target: Actor,
                critic_target: Critic, actor_opt: torch.optim.Optimizer,
                critic_opt: torch.optim.Optimizer, batch: Batch, gamma: float,
                tau: float) -> tuple[float, float]:
    """One DDPG update (SB3's order): the critic on the MSE to
    ``y = r + γ (1 - terminated) Q'(s', μ'(s'))``, then the actor on
    ``-mean Q(s, μ(s))``, then Polyak updates of both targets. Returns the two losses.
    Actions in ``batch`` are in the scaled box ``[-1, 1]``."""
    with torch.no_grad():
        next_a = actor_target.forward_scaled(batch.next_obs)
        y = batch.reward + (1.0 - batch.terminated) * gamma * critic_target(
            batch.next_obs, next_a)
    critic_loss = F.mse_loss(critic(batch.obs, batch.action), y)
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()
    actor_loss = -critic(batch.obs, actor.forward_scaled(batch.obs)).mean()
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    polyak_update(critic.parameters(), critic_target.parameters(), tau)
    polyak_update(actor.parameters(), actor_target.parameters(), tau)
    return float(critic_loss.detach()), float(actor_loss.detach())


def train_ddpg(env_id: str, cfg: DDPGConfig, seed: int = 0, *, desc: str | None = None,
               progress: bool = True) -> TrainResult:
    """DDPG on a gymnasium environment with a Box action space (one environment).

    Uniform random actions for the first ``learning_starts`` steps, then
    ``clip(tanh-output + N(0, noise_std²), -1, 1)`` mapped onto the box; after
    ``learning_starts``, ``gradient_steps`` calls of :func:`ddpg_update` every
    ``train_freq`` steps. Returns the actor (eval mode, CPU).
    """
    import gymnasium as gym

    if not isinstance(cfg, DDPGConfig):
        raise TypeError(f"cfg must be a DDPGConfig, got {type(cfg).__name__}")
    env = gym.make(env_id)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"{env_id} does not have a continuous (Box) action space")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    actor = Actor(obs_dim, act_dim, low, high, cfg.hidden)
    critic = Critic(obs_dim, act_dim, cfg.hidden)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim, act_dim, discrete=False)
    result = TrainResult(actor)
    begin = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    bar = _progress(cfg.total_steps, desc, progress)
    for step in range(cfg.total_steps):
        if step < cfg.learning_starts:
            scaled = 2.0 * (env.action_space.sample() - low) / (high - low) - 1.0
        else:
            with torch.no_grad():
                scaled = actor.forward_scaled(torch.as_tensor(obs)[None])[0].numpy()
            scaled = np.clip(scaled + cfg.noise_std * rng.standard_normal(act_dim),
                             -1.0, 1.0)
        action = low + 0.5 * (scaled + 1.0) * (high - low)
        next_obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        buffer.add(obs, scaled, float(reward), next_obs, terminated)
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            result.episode_returns.append(episode_return)
            result.episode_ends.append(step + 1)
            obs, _ = env.reset()
            episode_return = 0.0
        if step + 1 > cfg.learning_starts and (step + 1) % cfg.train_freq == 0:
            for _ in range(cfg.gradient_steps):
                ddpg_update(actor, critic, actor_target, critic_target, actor_opt,
                            critic_opt, buffer.sample(cfg.batch_size, rng), cfg.gamma,
                            cfg.tau)
        bar.update(1)
    bar.close()
    env.close()
    result.seconds = time.perf_counter() - begin
    actor.eval()
    return result


def actor_policy(actor: Actor) -> Policy:
    """The deterministic policy ``s -> μ(s)`` on a batch (n, obs_dim) -> (n, act_dim)."""
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor(torch.as_tensor(obs, dtype=torch.float32)).numpy()
    return act


def random_policy(action_space, seed: int) -> Policy:
    """Uniform random actions from a gymnasium space, seeded; batched."""
    space = copy.deepcopy(action_space)
    space.seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        return np.array([space.sample() for _ in range(len(obs))])
    return act


def learning_curve(ends: Sequence[int], returns: Sequence[float], grid: np.ndarray,
                   window: int = 10) -> np.ndarray:
    """Mean return of the last ``window`` training episodes finished by each step of
    ``grid`` (NaN before the first episode ends); shape ``grid.shape``."""
    ends, returns = np.asarray(ends), np.asarray(returns, dtype=float)
    if ends.shape != returns.shape:
        raise ValueError("ends and returns must have the same length")
    out = np.full(len(grid), math.nan)
    for i, g in enumerate(grid):
        done = int(np.searchsorted(ends, g, side="right"))
        if done:
            out[i] = returns[max(0, done - window):done].mean()
    return out
