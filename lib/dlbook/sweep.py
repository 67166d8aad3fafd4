"""Choosing a setting on validation data over several seeds, then testing it once.

The protocol the book uses wherever a conclusion rests on a comparison:

1. train every setting ``s`` of a small grid (a learning rate, a weight decay...) with
   every seed ``k``, and record its validation score ``v(s, k)``;
2. choose the setting with the best mean validation score,
   ``s* = argmax_s mean_k v(s, k)`` (or argmin for a loss);
3. evaluate the test split only for ``s*``, once per seed, and report the mean ± sample
   standard deviation over the seeds.

``train(setting, seed)`` returns a :class:`Trial`: the validation score and a callable
that evaluates the test split (for example a closure over the trained model). The test
callables of the settings that were not chosen are never called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from tqdm.auto import tqdm


@dataclass
class Trial:
    """One training run: its validation score and how to score it on the test split."""

    val: float
    test: Callable[[], float]
    extra: dict[str, Any] = field(default_factory=dict)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


@dataclass
class Sweep:
    """The outcome of :func:`grid_search`.

    ``val[s]``: validation scores of setting ``s``, one per seed (in the order of
    ``seeds``); ``best``: the chosen setting; ``test``: its test scores, one per seed;
    ``trials[s]``: the :class:`Trial` objects (for extra quantities a run recorded).
    """

    settings: list
    seeds: list[int]
    val: dict
    best: Hashable
    test: list[float]
    trials: dict
    higher_is_better: bool = True

    def val_mean_std(self, setting: Hashable) -> tuple[float, float]:
        return mean_std(self.val[setting])

    def test_mean_std(self) -> tuple[float, float]:
        return mean_std(self.test)


def grid_search(train: Callable[[Hashable, int], Trial], settings: Sequence[Hashable],
                seeds: Sequence[int], *, higher_is_better: bool = True,
                progress: bool = True, desc: str = "grid") -> Sweep:
    """Train every ``(setting, seed)``, choose on mean validation score, test the choice.

    Ties in the mean validation score go to the earlier setting in ``settings``. A run
    that diverged should report ``inf`` as its loss (``-inf`` as its score): its setting
    then has an infinite mean and is never chosen. NaN is refused.
    """
    settings, seeds = list(settings), list(seeds)
    if not settings:
        raise ValueError("grid_search needs at least one setting")
    if not seeds:
        raise ValueError("grid_search needs at least one seed")
    if len(set(settings)) != len(settings):
        raise ValueError(f"settings must be distinct, got {settings}")
    trials: dict = {s: [] for s in settings}
    bar = tqdm(total=len(settings) * len(seeds), desc=desc, disable=not progress,
               leave=False)
    for s in settings:
        for seed in seeds:
            trial = train(s, seed)
            if not isinstance(trial, Trial):
                raise TypeError(f"train must return a Trial, got {type(trial).__name__}")
            if math.isnan(trial.val):             # a diverged run may report +-inf
                raise ValueError(f"NaN validation score for {s!r}, seed {seed}: report "
                                 "a diverged run as inf (a loss) or -inf (a score)")
            trials[s].append(trial)
            bar.update()
    bar.close()
    val = {s: [t.val for t in trials[s]] for s in settings}
    sign = 1.0 if higher_is_better else -1.0
    best = max(settings, key=lambda s: (sign * mean_std(val[s])[0], -settings.index(s)))
    test = [float(t.test()) for t in trials[best]]
    return Sweep(settings, seeds, val, best, test, trials, higher_is_better)
