"""Finite Markov decision processes as tensors: exact and iterative planning, Q-learning.

A finite MDP with ``S`` states and ``A`` actions is stored as two float64 arrays,

* ``P`` of shape ``(S, A, S)``: ``P[s, a, s'] = Pr(S_{t+1} = s' | S_t = s, A_t = a)``,
  every row ``P[s, a, :]`` a probability vector;
* ``R`` of shape ``(S, A)``: ``R[s, a] = E[R_{t+1} | S_t = s, A_t = a]``, the expected
  reward of taking ``a`` in ``s``;

and a discount ``gamma`` in ``[0, 1)``. A policy is either deterministic, an int array
``(S,)`` of actions, or stochastic, a float array ``(S, A)`` whose rows are probability
vectors. Everything here is NumPy in float64 (Sutton & Barto 2018, chapters 3, 4, 6).

The module provides a grid-world builder (:func:`grid_world`), exact policy evaluation
by a linear solve (:func:`policy_evaluation_exact`), iterative evaluation
(:func:`policy_evaluation_iterative`), :func:`value_iteration` (Bellman 1957),
:func:`policy_iteration` (Howard 1960), tabular :func:`q_learning` (Watkins & Dayan
1992), a converter from Gymnasium's toy-text transition tables
(:func:`from_transition_table`) and :func:`draw_grid` for values and policy arrows.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["ACTIONS", "ARROWS", "GridWorld", "grid_world", "check_mdp", "check_policy",
           "policy_matrices", "policy_evaluation_exact", "policy_evaluation_iterative",
           "q_from_v", "greedy", "bellman_optimality", "value_iteration", "ValueIteration",
           "policy_iteration", "PolicyIteration", "q_learning", "QLearning",
           "optimal_actions", "from_transition_table", "draw_grid"]

#: The grid world's actions, in index order, as (row step, column step).
ACTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (0, 1), (1, 0), (0, -1))
#: Their names: up, right, down, left.
ARROWS: tuple[str, ...] = ("up", "right", "down", "left")


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------

def check_mdp(P, R, gamma: float, *, atol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Validate an MDP and return ``(P, R)`` as float64 arrays.

    Raises ``ValueError`` unless ``P`` has shape ``(S, A, S)`` with non-negative entries
    whose rows ``P[s, a, :]`` sum to 1 (within ``atol``), ``R`` has shape ``(S, A)`` and is
    finite, and ``0 <= gamma < 1``.
    """
    P = np.asarray(P, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] == 0 or P.shape[1] == 0:
        raise ValueError(f"P must have shape (S, A, S) with S, A >= 1, got {P.shape}")
    if R.shape != P.shape[:2]:
        raise ValueError(f"R must have shape (S, A) = {P.shape[:2]}, got {R.shape}")
    if not np.all(np.isfinite(P)) or not np.all(np.isfinite(R)):
        raise ValueError("P and R must be finite")
    if P.min() < 0:
        raise ValueError(f"P has a negative entry ({P.min():.3g})")
    sums = P.sum(axis=2)
    worst = np.abs(sums - 1.0).max()
    if worst > atol:
        s, a = np.unravel_index(np.abs(sums - 1.0).argmax(), sums.shape)
        raise ValueError(f"rows of P must sum to 1: P[{s}, {a}, :] sums to {sums[s, a]!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating)):
        raise TypeError(f"gamma must be a float, got {type(gamma).__name__}")
    if not 0.0 <= float(gamma) < 1.0:
        raise ValueError(f"gamma must lie in [0, 1), got {gamma!r}")
    return P, R


def check_policy(policy, n_states: int, n_actions: int, *, atol: float = 1e-10) -> np.ndarray:
    """Validate a policy and return it as an ``(S, A)`` float64 matrix ``pi[s, a]``.

    ``policy`` is an int array ``(S,)`` of actions in ``[0, A)`` (deterministic) or an
    ``(S, A)`` array of probabilities whose rows sum to 1; anything else is a ``ValueError``.
    """
    policy = np.asarray(policy)
    if policy.ndim == 1:
        if policy.shape[0] != n_states:
            raise ValueError(f"a deterministic policy needs shape ({n_states},), "
                             f"got {policy.shape}")
        if not np.issubdtype(policy.dtype, np.integer):
            raise ValueError(f"a deterministic policy holds ints, got dtype {policy.dtype}")
        if policy.min() < 0 or policy.max() >= n_actions:
            raise ValueError(f"actions must lie in [0, {n_actions}), got range "
                             f"[{policy.min()}, {policy.max()}]")
        pi = np.zeros((n_states, n_actions))
        pi[np.arange(n_states), policy] = 1.0
        return pi
    if policy.shape != (n_states, n_actions):
        raise ValueError(f"a policy needs shape ({n_states},) or ({n_states}, {n_actions}), "
                         f"got {policy.shape}")
    pi = policy.astype(np.float64)
    if not np.all(np.isfinite(pi)) or pi.min() < 0:
        raise ValueError("a stochastic policy must hold finite non-negative probabilities")
    if np.abs(pi.sum(axis=1) - 1.0).max() > atol:
        raise ValueError("rows of a stochastic policy must sum to 1")
    return pi


# ---------------------------------------------------------------------------------------
# The grid world
# ---------------------------------------------------------------------------------------

@dataclass
class GridWorld:
    """A grid world as an MDP (built by :func:`grid_world`).

    ``P`` ``(S, A, S)``, ``R`` ``(S, A)``, ``gamma``; ``cells[s] = (row, col)`` of state
    ``s`` for the ``S - 1`` cell states; the last state, index ``S - 1 = end``, is the
    absorbing state entered after the goal or the trap (it has no cell). ``index`` maps a
    cell to its state; ``start`` is the start state; ``goals`` and ``traps`` list the exit
    states; ``layout`` is the list of rows the world was built from.
    """

    P: np.ndarray
    R: np.ndarray
    gamma: float
    layout: list[str]
    cells: list[tuple[int, int]]
    index: dict[tuple[int, int], int]
    start: int
    goals: list[int]
    traps: list[int]
    slip: float

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def end(self) -> int:
        """The absorbing state (index ``S - 1``)."""
        return self.P.shape[0] - 1

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.layout), len(self.layout[0])

    @property
    def decision_states(self) -> np.ndarray:
        """States where the action matters: every cell but the goals and the traps."""
        exits = set(self.goals) | set(self.traps) | {self.end}
        return np.array([s for s in range(self.n_states) if s not in exits])

    def to_grid(self, values) -> np.ndarray:
        """``values`` ``(S,)`` laid out on the grid ``(rows, cols)``, NaN on walls."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.n_states,):
            raise ValueError(f"values must have shape ({self.n_states},), got {values.shape}")
        out = np.full(self.shape, np.nan)
        for s, (r, c) in enumerate(self.cells):
            out[r, c] = values[s]
        return out


def grid_world(layout: Sequence[str], *, slip: float = 0.2, gamma: float = 0.9,
               goal_reward: float = 1.0, trap_reward: float = -1.0,
               step_reward: float = 0.0) -> GridWorld:
    """Build a slippery grid world from rows of characters.

    ``.`` free cell, ``#`` wall, ``S`` start (a free cell), ``G`` goal, ``T`` trap. Actions
    0..3 move up, right, down, left (:data:`ACTIONS`). The move goes in the intended
    direction with probability ``1 - slip`` and to each of the two perpendicular
    directions with probability ``slip / 2``; a move into a wall or off the grid leaves
    the agent where it is. Every action in a free cell earns ``step_reward``. In a goal
    (trap) cell every action earns ``goal_reward`` (``trap_reward``) and leads to the
    absorbing state ``end``, where all rewards are 0. So ``V(goal) = goal_reward``
    exactly, and the return of reaching the goal after ``k`` moves is
    ``gamma^k * goal_reward`` plus the discounted step rewards.
    """
    layout = [str(row) for row in layout]
    if not layout or any(len(row) != len(layout[0]) for row in layout) or not layout[0]:
        raise ValueError("layout must be a non-empty list of rows of equal length")
    bad = set("".join(layout)) - set(".#SGT")
    if bad:
        raise ValueError(f"layout holds unknown characters {sorted(bad)}; use . # S G T")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must lie in [0, 1], got {slip!r}")
    cells = [(r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch != "#"]
    kinds = [layout[r][c] for r, c in cells]
    if kinds.count("S") != 1:
        raise ValueError(f"layout needs exactly one start S, has {kinds.count('S')}")
    if "G" not in kinds:
        raise ValueError("layout needs at least one goal G")
    index = {cell: s for s, cell in enumerate(cells)}
    S, A = len(cells) + 1, len(ACTIONS)
    end = S - 1
    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    rows, cols = len(layout), len(layout[0])

    def move(cell, a):
        r, c = cell[0] + ACTIONS[a][0], cell[1] + ACTIONS[a][1]
        inside = 0 <= r < rows and 0 <= c < cols and layout[r][c] != "#"
        return index[(r, c)] if inside else index[cell]

    for s, (cell, kind) in enumerate(zip(cells, kinds)):
        for a in range(A):
            if kind in "GT":
                P[s, a, end] = 1.0
                R[s, a] = goal_reward if kind == "G" else trap_reward
                continue
            R[s, a] = step_reward
            side = ((a + 1) % A, (a + 3) % A)
            for b, p in ((a, 1.0 - slip), (side[0], slip / 2), (side[1], slip / 2)):
                P[s, a, move(cell, b)] += p
    P[end, :, end] = 1.0
    check_mdp(P, R, gamma)
    return GridWorld(P=P, R=R, gamma=float(gamma), layout=layout, cells=cells, index=index,
                     start=kinds.index("S"),
                     goals=[s for s, k in enumerate(kinds) if k == "G"],
                     traps=[s for s, k in enumerate(kinds) if k == "T"], slip=float(slip))


def from_transition_table(table: Mapping[int, Mapping[int, Sequence]], n_states: int,
                          n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """``(P, R)`` from a Gymnasium toy-text table such as ``FrozenLake-v1``'s
    ``env.unwrapped.P``.

    ``table[s][a]`` is a list of ``(prob, next_state, reward, terminated)``; then
    ``P[s, a, s'] = sum of prob over the entries with next_state s'`` and
    ``R[s, a] = sum of prob * reward`` (the expected reward). The ``terminated`` flag is not
    needed: Gymnasium's terminal states are absorbing, with zero reward, in the table.
    """
    P = np.zeros((n_states, n_actions, n_states))
    R = np.zeros((n_states, n_actions))
    for s in range(n_states):
        for a in range(n_actions):
            for prob, nxt, reward, *_ in table[s][a]:
                P[s, a, nxt] += prob
                R[s, a] += prob * reward
    return P, R


# ---------------------------------------------------------------------------------------
# Policy evaluation
# ---------------------------------------------------------------------------------------

def policy_matrices(P, R, policy) -> tuple[np.ndarray, np.ndarray]:
    """``(P_pi, r_pi)``: ``P_pi[s, s'] = sum_a pi(a|s) P[s, a, s']`` ``(S, S)`` and
    ``r_pi[s] = sum_a pi(a|s) R[s, a]`` ``(S,)``."""
    P = np.asarray(P, dtype=np.float64)
    pi = check_policy(policy, P.shape[0], P.shape[1])
    return np.einsum("sa,sat->st", pi, P), np.einsum("sa,sa->s", pi, np.asarray(R, float))


def policy_evaluation_exact(P, R, gamma: float, policy) -> np.ndarray:
    """``v_pi`` ``(S,)`` from the Bellman expectation equation as a linear system.

    ``v_pi = r_pi + gamma P_pi v_pi``, that is ``(I - gamma P_pi) v_pi = r_pi``, solved by
    LU factorisation. ``I - gamma P_pi`` is invertible for ``gamma < 1`` because
    ``P_pi`` is stochastic, so its spectral radius is 1.
    """
    P, R = check_mdp(P, R, gamma)
    P_pi, r_pi = policy_matrices(P, R, policy)
    return np.linalg.solve(np.eye(P.shape[0]) - gamma * P_pi, r_pi)


def policy_evaluation_iterative(P, R, gamma: float, policy, *, tol: float = 1e-12,
                                max_iter: int = 100_000,
                                v0=None) -> tuple[np.ndarray, int]:
    """``(v, k)``: iterate ``v_{k+1} = r_pi + gamma P_pi v_k`` (the Bellman expectation
    backup, a ``gamma``-contraction in the sup norm) from ``v0`` (zeros by default).

    Stops at the first ``k`` with ``||v_k - v_{k-1}||_inf <= tol (1 - gamma) / gamma``,
    which guarantees ``||v_k - v_pi||_inf <= tol``. Raises ``RuntimeError`` after
    ``max_iter`` sweeps.
    """
    P, R = check_mdp(P, R, gamma)
    P_pi, r_pi = policy_matrices(P, R, policy)
    v = np.zeros(P.shape[0]) if v0 is None else np.array(v0, dtype=np.float64)
    if v.shape != (P.shape[0],):
        raise ValueError(f"v0 must have shape ({P.shape[0]},), got {v.shape}")
    threshold = tol * (1 - gamma) / gamma if gamma > 0 else np.inf
    for k in range(1, max_iter + 1):
        new = r_pi + gamma * P_pi @ v
        done = np.abs(new - v).max() <= threshold
        v = new
        if done:
            return v, k
    raise RuntimeError(f"policy evaluation did not reach tol={tol} in {max_iter} sweeps")


# ---------------------------------------------------------------------------------------
# Optimality: value iteration and policy iteration
# ---------------------------------------------------------------------------------------

def q_from_v(P, R, gamma: float, v) -> np.ndarray:
    """``Q[s, a] = R[s, a] + gamma sum_s' P[s, a, s'] v[s']``, shape ``(S, A)``."""
    return np.asarray(R, float) + gamma * np.asarray(P, float) @ np.asarray(v, float)


def greedy(Q, *, atol: float = 1e-9) -> np.ndarray:
    """Greedy actions ``(S,)`` of ``Q`` ``(S, A)`` with a deterministic tie rule: the
    lowest-index action within ``atol`` of the row's maximum (so that two methods whose
    ``Q`` agree to rounding pick the same action among equally good ones)."""
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2:
        raise ValueError(f"Q must have shape (S, A), got {Q.shape}")
    return np.argmax(Q >= Q.max(axis=1, keepdims=True) - atol, axis=1)


def bellman_optimality(P, R, gamma: float, v) -> np.ndarray:
    """The optimality backup ``(T v)[s] = max_a (R[s, a] + gamma sum_s' P[s, a, s'] v[s'])``."""
    return q_from_v(P, R, gamma, v).max(axis=1)


def optimal_actions(Q_star, *, atol: float = 1e-9) -> np.ndarray:
    """Boolean ``(S, A)``: which actions are optimal, ``Q*[s, a] >= max_a Q*[s, a] - atol``."""
    Q_star = np.asarray(Q_star, dtype=np.float64)
    return Q_star >= Q_star.max(axis=1, keepdims=True) - atol


@dataclass
class ValueIteration:
    """What :func:`value_iteration` returns: ``v`` ``(S,)``, ``Q`` ``(S, A)``, the greedy
    ``policy`` ``(S,)``, the number of sweeps ``n_iter`` and ``values``, the iterates
    ``v_0 .. v_n`` as an array ``(n_iter + 1, S)``."""

    v: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    n_iter: int
    values: np.ndarray


def value_iteration(P, R, gamma: float, *, tol: float = 1e-10, max_iter: int = 100_000,
                    v0=None) -> ValueIteration:
    """Iterate the Bellman optimality backup ``v_{k+1} = max_a (R + gamma P v_k)``.

    The backup is a ``gamma``-contraction in the sup norm, so ``||v_k - v*||_inf <=
    gamma^k ||v_0 - v*||_inf``. The loop stops at the first ``k`` with
    ``||v_k - v_{k-1}||_inf <= tol (1 - gamma) / gamma``, which guarantees
    ``||v_k - v*||_inf <= tol``; the policy returned is greedy with respect to ``v_k``.
    """
    P, R = check_mdp(P, R, gamma)
    v = np.zeros(P.shape[0]) if v0 is None else np.array(v0, dtype=np.float64)
    if v.shape != (P.shape[0],):
        raise ValueError(f"v0 must have shape ({P.shape[0]},), got {v.shape}")
    threshold = tol * (1 - gamma) / gamma if gamma > 0 else np.inf
    values = [v]
    for k in range(1, max_iter + 1):
        new = bellman_optimality(P, R, gamma, v)
        done = np.abs(new - v).max() <= threshold
        v = new
        values.append(v)
        if done:
            Q = q_from_v(P, R, gamma, v)
            return ValueIteration(v=v, Q=Q, policy=greedy(Q), n_iter=k,
                                  values=np.stack(values))
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iter} sweeps")


@dataclass
class PolicyIteration:
    """What :func:`policy_iteration` returns: ``v`` ``(S,)`` (exact, by the linear solve),
    ``Q`` ``(S, A)``, the final ``policy`` ``(S,)``, ``n_iter`` (policy evaluations) and
    ``policies``, every policy evaluated, as an int array ``(n_iter, S)``."""

    v: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    n_iter: int
    policies: np.ndarray


def policy_iteration(P, R, gamma: float, *, policy0=None, max_iter: int = 1000,
                     atol: float = 1e-9) -> PolicyIteration:
    """Howard's policy iteration: evaluate ``pi_k`` exactly
    (:func:`policy_evaluation_exact`), then improve, ``pi_{k+1}(s) = argmax_a Q_{pi_k}(s,
    a)``, until the policy is stable.

    An action is changed only where another one is better by more than ``atol``, so
    that ties and rounding cannot make the loop cycle; the final policy is then
    re-expressed with the tie rule of :func:`greedy`. Each improvement is monotone,
    ``v_{pi_{k+1}} >= v_{pi_k}``, and there are finitely many policies, so the loop ends.
    """
    P, R = check_mdp(P, R, gamma)
    S, A = P.shape[:2]
    policy = np.zeros(S, dtype=np.int64) if policy0 is None else np.array(policy0)
    check_policy(policy, S, A)
    policies = []
    for _ in range(max_iter):
        policies.append(policy.copy())
        v = policy_evaluation_exact(P, R, gamma, policy)
        Q = q_from_v(P, R, gamma, v)
        current = Q[np.arange(S), policy]
        better = Q.max(axis=1) > current + atol
        if not better.any():
            return PolicyIteration(v=v, Q=Q, policy=greedy(Q, atol=atol),
                                   n_iter=len(policies), policies=np.stack(policies))
        policy = np.where(better, Q.argmax(axis=1), policy)
    raise RuntimeError(f"policy iteration did not stabilise in {max_iter} iterations")


# ---------------------------------------------------------------------------------------
# Tabular Q-learning
# ---------------------------------------------------------------------------------------

@dataclass
class QLearning:
    """What :func:`q_learning` returns: the table ``Q`` ``(S, A)``, ``visits`` ``(S, A)``
    (updates of each pair), ``steps`` (environment steps in all), and, at every
    ``eval_every`` episodes, ``episodes`` (a list of episode counts) with ``error``
    (``max |Q - Q*|``) and ``optimal`` (the fraction of ``states`` whose greedy action is
    optimal), when ``Q_star`` was given."""

    Q: np.ndarray
    visits: np.ndarray
    steps: int
    episodes: list[int] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    optimal: list[float] = field(default_factory=list)


def q_learning(P, R, gamma: float, n_episodes: int, *, seed: int = 0,
               starts: Sequence[int] | None = None, terminal: Sequence[int] = (),
               epsilon: float = 0.2, alpha: Callable[[np.ndarray], np.ndarray] | None = None,
               max_steps: int = 200, Q_star=None, states: Sequence[int] | None = None,
               eval_every: int = 100, progress: bool = False) -> QLearning:
    """Watkins's Q-learning on the MDP ``(P, R, gamma)``, simulated from its tensors.

    Each episode starts in a state drawn uniformly from ``starts`` (all non-terminal
    states if None: "exploring starts") and runs until it enters a ``terminal`` state or
    after ``max_steps`` steps. In state ``s`` the behaviour policy is epsilon-greedy on
    ``Q`` (ties broken at random), the next state is drawn from ``P[s, a, :]`` and the
    reward is ``R[s, a]``; then, with ``n = visits[s, a]`` counted after this update,

    ``Q[s, a] <- Q[s, a] + alpha(n) (R[s, a] + gamma max_b Q[s', b] (1 - done) - Q[s, a])``

    where ``done`` says that ``s'`` is terminal (``Q`` of a terminal state stays 0). The
    default step size is ``alpha(n) = n^{-0.8}``, which satisfies the Robbins-Monro
    conditions (sum of ``alpha`` infinite, sum of ``alpha^2`` finite) under which Watkins &
    Dayan (1992) prove ``Q -> Q*`` when every pair is visited infinitely often.
    """
    P, R = check_mdp(P, R, gamma)
    S, A = P.shape[:2]
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) \
            or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")
    is_terminal = np.zeros(S, dtype=bool)
    is_terminal[list(terminal)] = True
    if starts is None:
        starts = np.flatnonzero(~is_terminal)
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size == 0 or starts.min() < 0 or starts.max() >= S:
        raise ValueError("starts must be a non-empty list of states in [0, S)")
    if alpha is None:
        def alpha(n):
            return n ** -0.8
    if Q_star is not None:
        Q_star = np.asarray(Q_star, dtype=np.float64)
        if Q_star.shape != (S, A):
            raise ValueError(f"Q_star must have shape ({S}, {A}), got {Q_star.shape}")
        best = optimal_actions(Q_star)
        states = np.arange(S) if states is None else np.asarray(states)
    rng = np.random.default_rng(seed)
    cum = np.cumsum(P, axis=2)
    cum[..., -1] = 1.0 + 1e-12          # guard against rounding in the last entry
    # Python lists in the inner loop: scalar indexing of NumPy arrays costs ~10x more.
    cum_rows = [[list(cum[s, a]) for a in range(A)] for s in range(S)]
    table = [[0.0] * A for _ in range(S)]
    counts = [[0] * A for _ in range(S)]
    rewards, done_at = R.tolist(), is_terminal.tolist()
    out = QLearning(Q=np.zeros((S, A)), visits=np.zeros((S, A), dtype=np.int64), steps=0)
    episodes = range(1, n_episodes + 1)
    if progress:
        from tqdm.auto import tqdm
        episodes = tqdm(episodes, desc="Q-learning", leave=False)
    block, pos = [], 0                   # uniforms drawn in blocks, three per step
    for episode in episodes:
        s = int(starts[rng.integers(starts.size)])
        for _ in range(max_steps):
            if pos + 3 > len(block):
                block, pos = rng.random(3 * 4096).tolist(), 0
            u0, u1, u2 = block[pos:pos + 3]
            pos += 3
            row = table[s]
            if u0 < epsilon:
                a = int(u1 * A)
            else:
                top = max(row)
                ties = [b for b in range(A) if row[b] == top]
                a = ties[int(u1 * len(ties))]
            nxt = bisect.bisect_right(cum_rows[s][a], u2)
            done = done_at[nxt]
            target = rewards[s][a] + (0.0 if done else gamma * max(table[nxt]))
            counts[s][a] += 1
            row[a] += float(alpha(counts[s][a])) * (target - row[a])
            out.steps += 1
            s = nxt
            if done:
                break
        if Q_star is not None and (episode % eval_every == 0 or episode == n_episodes):
            Q = np.array(table)
            out.episodes.append(episode)
            out.error.append(float(np.abs(Q - Q_star).max()))
            chosen = greedy(Q)[states]
            out.optimal.append(float(best[states, chosen].mean()))
    out.Q[:] = table
    out.visits[:] = counts
    return out


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------

def draw_grid(ax, world: GridWorld, values, policy=None, *, cmap: str = "viridis",
              vmin: float | None = None, vmax: float | None = None, annotate: bool = True,
              color: str = "k"):
    """Draw ``values`` ``(S,)`` of ``world`` as a heat map on ``ax`` (walls in grey, G and T
    marked), with the arrows of a deterministic ``policy`` ``(S,)`` in the decision
    states, in ``color``; ``annotate`` writes the values of G and T. Returns the image,
    for ``fig.colorbar(image, ax=ax, label=...)``."""
    grid = world.to_grid(values)
    rows, cols = world.shape
    ax.set_facecolor("0.55")
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    for s, (r, c) in enumerate(world.cells):
        kind = world.layout[r][c]
        label = kind if kind in "GTS" else ""
        if annotate:
            label = f"{label} {grid[r, c]:.2f}".strip() if kind in "GT" else label
        if label:
            ax.text(c - 0.42, r - 0.42, label, ha="left", va="top", color=color,
                    fontsize=12, fontweight="bold")
    if policy is not None:
        policy = np.asarray(policy)
        for s in world.decision_states:
            r, c = world.cells[s]
            dr, dc = ACTIONS[int(policy[s])]
            ax.annotate("", xy=(c + 0.3 * dc, r + 0.3 * dr),
                        xytext=(c - 0.3 * dc, r - 0.3 * dr),
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.5))
    ax.grid(False)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    return image
