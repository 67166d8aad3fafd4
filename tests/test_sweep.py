import math

import pytest

from dlbook.sweep import Trial, grid_search, mean_std


def test_mean_std_is_the_sample_standard_deviation():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert math.isclose(std, math.sqrt(5.0 / 3.0))
    assert mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_grid_search_chooses_on_validation_and_tests_only_the_choice():
    tested = []

    def train(lr, seed):
        # validation best at lr = 0.1; test scores would prefer lr = 1.0
        val = {0.01: 0.5, 0.1: 0.9, 1.0: 0.7}[lr] + 0.01 * seed
        test_score = {0.01: 0.5, 0.1: 0.6, 1.0: 0.99}[lr] + 0.001 * seed
        return Trial(val, lambda: tested.append((lr, seed)) or test_score)

    sweep = grid_search(train, [0.01, 0.1, 1.0], seeds=[0, 1, 2], progress=False)
    assert sweep.best == 0.1
    assert tested == [(0.1, 0), (0.1, 1), (0.1, 2)]
    assert sweep.test == pytest.approx([0.6, 0.601, 0.602])
    assert sweep.val_mean_std(1.0)[0] == pytest.approx(0.71)
    assert sweep.test_mean_std()[1] == pytest.approx(0.001)


def test_a_diverged_run_reported_as_inf_is_never_chosen():
    loss = {"fast": float("inf"), "slow": 2.0}
    sweep = grid_search(lambda s, k: Trial(loss[s] if k == 0 else 1.0, lambda: 0.0),
                        ["fast", "slow"], [0, 1], higher_is_better=False, progress=False)
    assert sweep.best == "slow"


def test_grid_search_minimises_a_loss_and_breaks_ties_by_order():
    loss = {"a": 2.0, "b": 1.0, "c": 1.0}
    sweep = grid_search(lambda s, k: Trial(loss[s], lambda: 0.0), ["a", "b", "c"], [0],
                        higher_is_better=False, progress=False)
    assert sweep.best == "b"


def test_grid_search_rejects_bad_input():
    ok = lambda s, k: Trial(1.0, lambda: 1.0)  # noqa: E731
    with pytest.raises(ValueError, match="at least one setting"):
        grid_search(ok, [], [0], progress=False)
    with pytest.raises(ValueError, match="at least one seed"):
        grid_search(ok, [1], [], progress=False)
    with pytest.raises(ValueError, match="distinct"):
        grid_search(ok, [1, 1], [0], progress=False)
    with pytest.raises(TypeError, match="Trial"):
        grid_search(lambda s, k: 0.5, [1], [0], progress=False)
    with pytest.raises(ValueError, match="NaN"):
        grid_search(lambda s, k: Trial(float("nan"), lambda: 0.0), [1], [0],
                    progress=False)
