"""Group-fairness metrics and group-specific thresholds, from scratch (chapter 20).

Every metric takes 1-D arrays of equal length ``(n,)``: binary labels ``y_true``
(0/1), binary predictions ``y_pred`` (0/1) and a sensitive feature ``groups`` (any
hashable values, at least two distinct ones). For a group ``a`` write
``P_a(.) = P(. | A = a)``, estimated by the fraction of that group's rows:

* selection rate  ``s_a = P_a(Yhat = 1)``                         (eq-ch20-selection)
* true-positive rate ``TPR_a = P_a(Yhat = 1 | Y = 1)``, false-positive rate
  ``FPR_a = P_a(Yhat = 1 | Y = 0)``, false-negative rate ``FNR_a = 1 - TPR_a``,
  positive predictive value ``PPV_a = P_a(Y = 1 | Yhat = 1)``, base rate
  ``p_a = P_a(Y = 1)``.
* demographic parity difference ``max_a s_a - min_a s_a`` and ratio
  ``min_a s_a / max_a s_a``                                       (eq-ch20-dp)
* equalised odds difference ``max(dTPR, dFPR)`` with ``dR = max_a R_a - min_a R_a``
  (``agg="worst_case"``), or their mean (``agg="mean"``)           (eq-ch20-eo)

These are the definitions of fairlearn's ``demographic_parity_difference`` /
``_ratio`` and ``equalized_odds_difference`` (``method="between_groups"``); the
chapter checks the equality. A rate whose denominator is empty (a group with no
positives, say) is ``nan``, as in fairlearn's ``MetricFrame``.
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np

RATES = ("n", "base_rate", "selection_rate", "tpr", "fpr", "fnr", "ppv", "accuracy")


def _as_1d(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _binary(name: str, values) -> np.ndarray:
    array = _as_1d(name, values)
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be numeric 0/1 or boolean, got dtype {array.dtype}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return array.astype(np.int64)


def _check(y_true, y_pred, groups, need_true: bool = True):
    y_pred = _binary("y_pred", y_pred)
    groups = _as_1d("groups", groups)
    y_true = _binary("y_true", y_true) if need_true else None
    lengths = {len(y_pred), len(groups)} | ({len(y_true)} if need_true else set())
    if len(lengths) != 1:
        raise ValueError(f"y_true, y_pred and groups must have equal lengths, got "
                         f"{'' if y_true is None else len(y_true)}/{len(y_pred)}/"
                         f"{len(groups)}")
    if len(y_pred) == 0:
        raise ValueError("empty input")
    labels = np.unique(groups)
    if len(labels) < 2:
        raise ValueError(f"need at least two groups, got {labels.tolist()}")
    return y_true, y_pred, groups, labels


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def rates(y_true, y_pred) -> dict[str, float]:
    """The rates of one group: ``n``, base rate, selection rate, TPR, FPR, FNR, PPV and
    accuracy of binary ``y_true``, ``y_pred`` of shape ``(n,)``."""
    y_true, y_pred = _binary("y_true", y_true), _binary("y_pred", y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred lengths differ: {len(y_true)} vs {len(y_pred)}")
    tp = int(np.sum((y_true == 1) & (y_pred == 1)))
    fp = int(np.sum((y_true == 0) & (y_pred == 1)))
    fn = int(np.sum((y_true == 1) & (y_pred == 0)))
    tn = int(np.sum((y_true == 0) & (y_pred == 0)))
    n = tp + fp + fn + tn
    return {"n": n, "base_rate": _ratio(tp + fn, n), "selection_rate": _ratio(tp + fp, n),
            "tpr": _ratio(tp, tp + fn), "fpr": _ratio(fp, fp + tn),
            "fnr": _ratio(fn, tp + fn), "ppv": _ratio(tp, tp + fp),
            "accuracy": _ratio(tp + tn, n)}


def group_rates(y_true, y_pred, groups):
    """A ``pandas.DataFrame`` with one row per group (sorted) and the columns
    :data:`RATES` (see :func:`rates`), the per-group table of fairlearn's
    ``MetricFrame(...).by_group``."""
    import pandas as pd

    y_true, y_pred, groups, labels = _check(y_true, y_pred, groups)
    table = pd.DataFrame([rates(y_true[groups == g], y_pred[groups == g]) for g in labels],
                         index=pd.Index(labels, name="group"))
    table["n"] = table["n"].astype(int)
    return table


def selection_rates(y_pred, groups) -> dict[Hashable, float]:
    """``s_a = P(Yhat = 1 | A = a)`` for each group ``a`` (eq-ch20-selection)."""
    _, y_pred, groups, labels = _check(None, y_pred, groups, need_true=False)
    return {g: float(y_pred[groups == g].mean()) for g in labels}


def demographic_parity_difference(y_pred, groups) -> float:
    """``max_a s_a - min_a s_a`` (eq-ch20-dp); 0 means equal selection rates."""
    s = list(selection_rates(y_pred, groups).values())
    return float(max(s) - min(s))


def demographic_parity_ratio(y_pred, groups) -> float:
    """``min_a s_a / max_a s_a`` (eq-ch20-dp); 1 means equal selection rates (0 if no
    group is ever selected, fairlearn's convention)."""
    s = list(selection_rates(y_pred, groups).values())
    return float(min(s) / max(s)) if max(s) > 0 else 0.0


def _spread(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmax(values) - np.nanmin(values))


def equalized_odds_difference(y_true, y_pred, groups, agg: str = "worst_case") -> float:
    """Equalised odds difference (eq-ch20-eo): ``max(dTPR, dFPR)`` for
    ``agg="worst_case"`` (fairlearn's default) or ``(dTPR + dFPR) / 2`` for
    ``agg="mean"``, where ``dR`` is the largest minus the smallest group rate."""
    if agg not in ("worst_case", "mean"):
        raise ValueError(f"agg must be 'worst_case' or 'mean', got {agg!r}")
    table = group_rates(y_true, y_pred, groups)
    d_tpr, d_fpr = _spread(table["tpr"]), _spread(table["fpr"])
    return max(d_tpr, d_fpr) if agg == "worst_case" else (d_tpr + d_fpr) / 2


def equal_opportunity_difference(y_true, y_pred, groups) -> float:
    """``max_a TPR_a - min_a TPR_a`` (Hardt et al.'s equality of opportunity)."""
    return _spread(group_rates(y_true, y_pred, groups)["tpr"])


# ---------------------------------------------------------------------------
# Group-specific thresholds (post-processing)

def threshold_for_rate(scores, rate: float) -> float:
    """A threshold ``t`` such that the fraction of ``scores >= t`` is as close to
    ``rate`` as the scores allow: the ``k``-th largest score, ``k = round(rate * n)``
    (``+inf`` when ``k = 0``). ``scores`` has shape ``(n,)``, ``0 <= rate <= 1``."""
    scores = _as_1d("scores", scores).astype(float)
    if len(scores) == 0:
        raise ValueError("scores is empty")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    k = int(round(rate * len(scores)))
    if k == 0:
        return float("inf")
    return float(np.sort(scores)[::-1][k - 1])


def group_thresholds(scores, groups, target: float | Mapping[Hashable, float],
                     y_true=None, rate: str = "selection") -> dict[Hashable, float]:
    """One threshold per group so that each group reaches its target rate.

    ``rate="selection"``: group ``a``'s selection rate ``P_a(score >= t_a)`` is the
    target (demographic parity when all targets are equal). ``rate="tpr"``: its TPR
    ``P_a(score >= t_a | Y = 1)`` is the target (equality of opportunity, Hardt et al.
    2016); needs ``y_true``. ``target`` is one number for every group or a mapping
    group -> number. ``scores``, ``groups`` (and ``y_true``) have shape ``(n,)``.
    """
    scores = _as_1d("scores", scores).astype(float)
    groups = _as_1d("groups", groups)
    if len(scores) != len(groups):
        raise ValueError(f"scores and groups lengths differ: {len(scores)} vs {len(groups)}")
    if rate not in ("selection", "tpr"):
        raise ValueError(f"rate must be 'selection' or 'tpr', got {rate!r}")
    if rate == "tpr":
        if y_true is None:
            raise ValueError("rate='tpr' needs y_true")
        y_true = _binary("y_true", y_true)
        if len(y_true) != len(scores):
            raise ValueError("y_true and scores lengths differ")
    labels = np.unique(groups)
    if len(labels) < 2:
        raise ValueError(f"need at least two groups, got {labels.tolist()}")
    targets = target if isinstance(target, Mapping) else {g: target for g in labels}
    missing = [g for g in labels if g not in targets]
    if missing:
        raise ValueError(f"no target for groups {missing}")
    out = {}
    for g in labels:
        mask = groups == g
        if rate == "tpr":
            mask = mask & (y_true == 1)
            if not mask.any():
                raise ValueError(f"group {g!r} has no positive rows")
        out[g] = threshold_for_rate(scores[mask], float(targets[g]))
    return out


def apply_thresholds(scores, groups, thresholds: Mapping[Hashable, float]) -> np.ndarray:
    """Predictions ``(n,)`` int: ``1`` where ``scores[i] >= thresholds[groups[i]]``."""
    scores = _as_1d("scores", scores).astype(float)
    groups = _as_1d("groups", groups)
    if len(scores) != len(groups):
        raise ValueError(f"scores and groups lengths differ: {len(scores)} vs {len(groups)}")
    unknown = sorted(set(np.unique(groups).tolist()) - set(thresholds))
    if unknown:
        raise ValueError(f"no threshold for groups {unknown}")
    cut = np.array([thresholds[g] for g in groups], dtype=float)
    return (scores >= cut).astype(np.int64)


def interpolated_parity_thresholds(scores, groups, lam: float,
                                   base_threshold: float = 0.5) -> dict[Hashable, float]:
    """Thresholds that move each group's selection rate a fraction ``lam`` of the way
    from its rate at the common ``base_threshold`` to the overall rate at it:

    ``s_a(lam) = (1 - lam) s_a(base) + lam s(base)``       (eq-ch20-interpolate)

    ``lam = 0`` keeps one threshold for all; ``lam = 1`` equalises selection rates
    (demographic parity) at the overall rate. ``0 <= lam <= 1``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    scores = _as_1d("scores", scores).astype(float)
    groups = _as_1d("groups", groups)
    if len(scores) != len(groups):
        raise ValueError(f"scores and groups lengths differ: {len(scores)} vs {len(groups)}")
    chosen = (scores >= base_threshold).astype(np.int64)
    own = selection_rates(chosen, groups)
    overall = float(chosen.mean())
    targets = {g: (1 - lam) * s + lam * overall for g, s in own.items()}
    return group_thresholds(scores, groups, targets)
