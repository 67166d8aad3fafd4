"""Tests of dlbook.mdp: grid-world tensors, exact and iterative planning, Q-learning."""

import numpy as np
import pytest

from dlbook import mdp

LAYOUT = ["S....",
          ".##.#",
          "...T.",
          ".#...",
          "...#G"]


@pytest.fixture(scope="module")
def world():
    return mdp.grid_world(LAYOUT, slip=0.2, gamma=0.9)


def random_mdp(S=6, A=3, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) ** 3
    P /= P.sum(axis=2, keepdims=True)
    return P, rng.normal(size=(S, A))


def test_grid_world_shapes_and_stochastic_rows(world):
    S = 20 + 1                                       # 20 free cells and the end state
    assert world.P.shape == (S, 4, S) and world.R.shape == (S, 4)
    np.testing.assert_allclose(world.P.sum(axis=2), 1.0, atol=1e-15)
    assert world.start == 0 and world.cells[0] == (0, 0)
    assert world.layout[world.cells[world.goals[0]][0]][world.cells[world.goals[0]][1]] == "G"
    assert world.to_grid(np.arange(S, dtype=float)).shape == (5, 5)
    assert np.isnan(world.to_grid(np.zeros(S))[1, 1])      # a wall


def test_grid_world_slip_and_walls(world):
    s = world.index[(0, 0)]
    right, down = world.index[(0, 1)], world.index[(1, 0)]
    # right: 0.8 to (0, 1); slips up (off the grid: stay) and down, 0.1 each
    assert world.P[s, 1, right] == pytest.approx(0.8)
    assert world.P[s, 1, s] == pytest.approx(0.1)
    assert world.P[s, 1, down] == pytest.approx(0.1)
    g = world.goals[0]
    assert world.P[g, 0, world.end] == 1.0 and world.R[g, 2] == 1.0
    assert world.R[world.traps[0], 3] == -1.0
    assert world.P[world.end, :, world.end].tolist() == [1.0] * 4


def test_deterministic_grid_values_are_discount_powers():
    w = mdp.grid_world(["S..G"], slip=0.0, gamma=0.5)
    v = mdp.value_iteration(w.P, w.R, w.gamma, tol=1e-13).v
    # three moves to G, then its exit reward 1: V(S) = 0.5^3
    np.testing.assert_allclose(v[:4], [0.125, 0.25, 0.5, 1.0], atol=1e-12)


def test_exact_equals_iterative_evaluation():
    P, R = random_mdp()
    pi = np.random.default_rng(1).dirichlet(np.ones(3), size=6)
    exact = mdp.policy_evaluation_exact(P, R, 0.95, pi)
    iterative, k = mdp.policy_evaluation_iterative(P, R, 0.95, pi, tol=1e-12)
    np.testing.assert_allclose(iterative, exact, atol=1e-12, rtol=0)
    assert k > 100
    # the Bellman expectation equation holds for the exact solution
    P_pi, r_pi = mdp.policy_matrices(P, R, pi)
    np.testing.assert_allclose(exact, r_pi + 0.95 * P_pi @ exact, atol=1e-13)


def test_two_state_closed_form():
    # stay in state 0 (reward 1) or jump to absorbing state 1 (reward 0 forever)
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, :, 1] = 1.0
    R = np.array([[1.0, 2.0], [0.0, 0.0]])
    vi = mdp.value_iteration(P, R, 0.9, tol=1e-12)
    assert vi.v[0] == pytest.approx(1 / (1 - 0.9), abs=1e-11)   # staying beats 2 once
    assert vi.policy[0] == 0
    assert mdp.value_iteration(P, R, 0.4).policy[0] == 1        # 1/(1-0.4) < 2


def test_value_iteration_equals_policy_iteration(world):
    vi = mdp.value_iteration(world.P, world.R, world.gamma, tol=1e-11)
    pi = mdp.policy_iteration(world.P, world.R, world.gamma)
    np.testing.assert_allclose(vi.v, pi.v, atol=1e-11, rtol=0)
    np.testing.assert_array_equal(vi.policy, pi.policy)
    assert pi.n_iter < vi.n_iter
    # v* is the fixed point of the optimality backup and the value of the greedy policy
    np.testing.assert_allclose(mdp.bellman_optimality(world.P, world.R, 0.9, pi.v), pi.v,
                               atol=1e-13)
    np.testing.assert_allclose(mdp.policy_evaluation_exact(world.P, world.R, 0.9, pi.policy),
                               pi.v, atol=1e-13)


def test_value_iteration_contraction_bound():
    P, R = random_mdp(seed=3)
    vi = mdp.value_iteration(P, R, 0.8, tol=1e-12)
    v_star = mdp.policy_iteration(P, R, 0.8).v
    err = np.abs(vi.values - v_star).max(axis=1)
    k = np.arange(len(err))
    assert np.all(err <= 0.8 ** k * err[0] * (1 + 1e-12) + 1e-14)
    assert err[-1] <= 1e-12


def test_value_iteration_on_random_mdps_matches_brute_force():
    P, R = random_mdp(S=3, A=2, seed=5)
    best = max(mdp.policy_evaluation_exact(P, R, 0.7, np.array(p)).sum()
               for p in np.ndindex(2, 2, 2))
    assert mdp.value_iteration(P, R, 0.7, tol=1e-12).v.sum() == pytest.approx(best, abs=1e-10)


def test_greedy_tie_rule():
    Q = np.array([[1.0, 1.0 + 1e-12, 0.0], [0.0, 2.0, 3.0]])
    assert mdp.greedy(Q).tolist() == [0, 2]
    assert mdp.optimal_actions(Q)[0].tolist() == [True, True, False]


def test_q_learning_converges_on_a_small_world():
    w = mdp.grid_world(["S.G", ".T."], slip=0.1, gamma=0.9)
    Q_star = mdp.value_iteration(w.P, w.R, w.gamma, tol=1e-12).Q
    out = mdp.q_learning(w.P, w.R, w.gamma, 4000, seed=0, terminal=[w.end], epsilon=0.5,
                         Q_star=Q_star, states=w.decision_states, eval_every=1000)
    assert out.Q.shape == (7, 4) and out.visits.sum() == out.steps
    assert out.episodes == [1000, 2000, 3000, 4000]
    assert out.error[-1] < 0.1 and out.optimal[-1] == 1.0
    again = mdp.q_learning(w.P, w.R, w.gamma, 4000, seed=0, terminal=[w.end], epsilon=0.5)
    np.testing.assert_array_equal(again.Q, out.Q)                 # reproducible by seed


def test_from_transition_table():
    table = {0: {0: [(0.5, 0, 1.0, False), (0.5, 1, 0.0, True)], 1: [(1.0, 1, 2.0, True)]},
             1: {0: [(1.0, 1, 0.0, True)], 1: [(1.0, 1, 0.0, True)]}}
    P, R = mdp.from_transition_table(table, 2, 2)
    np.testing.assert_array_equal(P[0], [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_array_equal(R[0], [0.5, 2.0])


def test_frozenlake_value_iteration_equals_linear_solve():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("FrozenLake-v1")
    n_s, n_a = env.observation_space.n, env.action_space.n
    P, R = mdp.from_transition_table(env.unwrapped.P, n_s, n_a)
    vi = mdp.value_iteration(P, R, 0.99, tol=1e-11)
    exact = mdp.policy_evaluation_exact(P, R, 0.99, vi.policy)
    np.testing.assert_allclose(vi.v, exact, atol=1e-10, rtol=0)
    assert 0.5 < exact[0] < 0.6
    env.close()


@pytest.mark.parametrize("change, message", [
    (lambda P, R, g: (P * 1.01, R, g), "sum to 1"),
    (lambda P, R, g: (P[:, :, :-1], R, g), "shape"),
    (lambda P, R, g: (P, R[:, :-1], g), "R must have shape"),
    (lambda P, R, g: (P, R, 1.0), "gamma"),
    (lambda P, R, g: (P, R, -0.1), "gamma"),
    (lambda P, R, g: (-P, R, g), "negative"),
    (lambda P, R, g: (P, R * np.nan, g), "finite"),
])
def test_bad_mdp_raises(change, message):
    P, R, gamma = change(*random_mdp(), 0.9)
    with pytest.raises(ValueError, match=message):
        mdp.value_iteration(P, R, gamma)
    with pytest.raises(ValueError, match=message):
        mdp.policy_evaluation_exact(P, R, gamma, np.zeros(P.shape[0], dtype=int))


def test_bad_policy_and_layout_raise():
    P, R = random_mdp()
    with pytest.raises(ValueError, match="shape"):
        mdp.policy_evaluation_exact(P, R, 0.9, np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="actions must lie"):
        mdp.policy_evaluation_exact(P, R, 0.9, np.full(6, 3))
    with pytest.raises(ValueError, match="ints"):
        mdp.policy_evaluation_exact(P, R, 0.9, np.zeros(6))
    with pytest.raises(ValueError, match="sum to 1"):
        mdp.policy_evaluation_exact(P, R, 0.9, np.full((6, 3), 0.5))
    with pytest.raises(TypeError, match="gamma"):
        mdp.value_iteration(P, R, "0.9")
    with pytest.raises(ValueError, match="unknown characters"):
        mdp.grid_world(["S.X", "..G"])
    with pytest.raises(ValueError, match="start"):
        mdp.grid_world(["...", "..G"])
    with pytest.raises(ValueError, match="slip"):
        mdp.grid_world(["S.G"], slip=1.5)
    with pytest.raises(ValueError, match="n_episodes"):
        mdp.q_learning(P, R, 0.9, 0)
