"""State-space models: the Kalman filter, the RTS smoother, the extended Kalman filter
and a bootstrap particle filter, in float64 NumPy (chapter 18).

The linear-Gaussian state-space model, with ``n`` states, ``m`` observations and ``p``
inputs, is

    x_t = A x_{t-1} + B u_t + w_t,   w_t ~ N(0, Q)          (A: n x n, B: n x p)
    y_t = C x_t + v_t,               v_t ~ N(0, R)          (C: m x n)
    x_0 ~ N(m0, P0),                 t = 1, ..., T.

Sequences are stacked along the first axis: observations ``ys`` of shape (T, m), inputs
``us`` of shape (T, p), filtered means (T, n) and covariances (T, n, n); row ``t - 1``
belongs to time ``t``. A missing observation is a row of NaN (or a masked row of a
``numpy.ma`` array): the filter then skips the update at that step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "LinearGaussianSSM", "FilterResult", "pykalman_arguments", "predict", "update", "kalman_filter",
    "rts_smoother", "gls_static", "nees", "nis", "chi2_band", "ssm_kernel",
    "ssm_recurrence", "causal_convolution", "fft_convolution", "ekf_filter",
    "systematic_resample", "multinomial_resample", "bootstrap_particle_filter",
    "ungm_step", "ungm_simulate", "UNGM_Q", "UNGM_R",
]


def _matrix(x, name: str, shape: tuple[int | None, int | None] | None = None) -> np.ndarray:
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a matrix (2-D), got shape {a.shape}")
    if shape is not None:
        for got, want, axis in zip(a.shape, shape, ("rows", "columns")):
            if want is not None and got != want:
                raise ValueError(f"{name} must have {want} {axis}, got shape {a.shape}")
    return a


def _vector(x, name: str, size: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {a.shape}")
    return a


@dataclass(frozen=True)
class LinearGaussianSSM:
    """The model above: matrices A (n, n), B (n, p) or None, C (m, n), Q (n, n),
    R (m, m) and the prior N(m0, P0) of x_0 (shapes (n,) and (n, n))."""

    A: np.ndarray
    C: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    m0: np.ndarray
    P0: np.ndarray
    B: np.ndarray | None = None

    def __post_init__(self) -> None:
        A = _matrix(self.A, "A")
        n = A.shape[0]
        if A.shape != (n, n):
            raise ValueError(f"A must be square, got shape {A.shape}")
        C = _matrix(self.C, "C", (None, n))
        m = C.shape[0]
        fields = {"A": A, "C": C, "Q": _matrix(self.Q, "Q", (n, n)),
                  "R": _matrix(self.R, "R", (m, m)), "m0": _vector(self.m0, "m0", n),
                  "P0": _matrix(self.P0, "P0", (n, n))}
        fields["B"] = None if self.B is None else _matrix(self.B, "B", (n, None))
        for key, value in fields.items():
            object.__setattr__(self, key, value)

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def m(self) -> int:
        return self.C.shape[0]

    def offsets(self, us, T: int) -> np.ndarray:
        """The input terms B u_t as a (T, n) array (zeros without B or inputs)."""
        if us is None or self.B is None:
            if us is not None:
                raise ValueError("inputs us were given but the model has no B")
            return np.zeros((T, self.n))
        us = np.asarray(us, dtype=np.float64)
        if us.shape != (T, self.B.shape[1]):
            raise ValueError(f"us must have shape ({T}, {self.B.shape[1]}), got {us.shape}")
        return us @ self.B.T

    def simulate(self, T: int, rng: np.random.Generator, us=None):
        """Draw ``(xs, ys)``: states x_1..x_T (T, n) and observations (T, m)."""
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int, got {T!r}")
        bu = self.offsets(us, T)
        x = rng.multivariate_normal(self.m0, self.P0)
        xs, ys = np.empty((T, self.n)), np.empty((T, self.m))
        for t in range(T):
            x = self.A @ x + bu[t] + rng.multivariate_normal(np.zeros(self.n), self.Q)
            xs[t] = x
            ys[t] = self.C @ x + rng.multivariate_normal(np.zeros(self.m), self.R)
        return xs, ys


def pykalman_arguments(model: LinearGaussianSSM, us=None, T: int | None = None) -> dict:
    """Keyword arguments for ``pykalman.KalmanFilter`` describing the same filter.

    pykalman's time 0 is this module's t = 1, and its ``initial_state_mean`` is the
    prior of that first state, updated by y_1 *without* a predict first; so it gets
    the predicted moments m_1^- = A m0 + B u_1, P_1^- = A P0 A^T + Q, and
    ``transition_offsets[k]`` = B u_{k+2} (the offset into pykalman's time k + 1)."""
    if T is None:
        T = 1 if us is None else len(us)
    bu = model.offsets(us, T)
    return dict(transition_matrices=model.A, observation_matrices=model.C,
                transition_covariance=model.Q, observation_covariance=model.R,
                transition_offsets=bu[1:] if T > 1 else np.zeros(model.n),
                observation_offsets=np.zeros(model.m),
                initial_state_mean=model.A @ model.m0 + bu[0],
                initial_state_covariance=model.A @ model.P0 @ model.A.T + model.Q)


@dataclass
class FilterResult:
    """Output of :func:`kalman_filter` (arrays of length T, row t-1 = time t).

    ``means``/``covs``: filtered N(m_t, P_t) (T, n), (T, n, n); ``pred_means``/
    ``pred_covs``: one-step predictions m_t^-, P_t^-; ``innovations`` y_t - C m_t^- (T, m)
    and their covariances ``S`` (T, m, m), NaN where y_t is missing; ``observed`` (T,)."""

    means: np.ndarray
    covs: np.ndarray
    pred_means: np.ndarray
    pred_covs: np.ndarray
    innovations: np.ndarray
    S: np.ndarray
    observed: np.ndarray


def predict(m: np.ndarray, P: np.ndarray, A: np.ndarray, Q: np.ndarray,
            bu: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predict: m^- = A m + B u, P^- = A P A^T + Q (``bu`` is B u, shape (n,))."""
    m_pred = A @ m if bu is None else A @ m + bu
    return m_pred, A @ P @ A.T + Q


def update(m: np.ndarray, P: np.ndarray, y: np.ndarray, C: np.ndarray, R: np.ndarray):
    """Update with y (m,): innovation e = y - C m, S = C P C^T + R, gain
    K = P C^T S^{-1}; returns ``(m + K e, P', e, S, K)`` with the Joseph form
    P' = (I - K C) P (I - K C)^T + K R K^T (equal to (I - K C) P, kept symmetric)."""
    e = y - C @ m
    S = C @ P @ C.T + R
    K = np.linalg.solve(S, C @ P).T        # S is symmetric: K^T = S^{-1} C P
    I_KC = np.eye(len(m)) - K @ C
    P_new = I_KC @ P @ I_KC.T + K @ R @ K.T
    return m + K @ e, P_new, e, S, K


def _observations(ys, m: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ys, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(ys)
        data = np.asarray(ys.filled(np.nan), dtype=np.float64)
    else:
        data = np.asarray(ys, dtype=np.float64)
        mask = np.isnan(data)
    if data.ndim == 1 and m == 1:
        data, mask = data[:, None], mask[:, None]
    if data.ndim != 2 or data.shape[1] != m:
        raise ValueError(f"ys must have shape (T, {m}), got {data.shape}")
    if len(data) == 0:
        raise ValueError("ys must hold at least one time step")
    partial = mask.any(1) & ~mask.all(1)
    if partial.any():
        raise ValueError("a time step must be observed in full or missing in full")
    return data, ~mask.all(1)


def kalman_filter(model: LinearGaussianSSM, ys, us=None) -> FilterResult:
    """Run predict then update for t = 1..T from the prior N(m0, P0) of x_0.

    ``ys``: (T, m), NaN rows (or masked rows) missing; ``us``: (T, p) or None."""
    if not isinstance(model, LinearGaussianSSM):
        raise TypeError("model must be a LinearGaussianSSM")
    data, observed = _observations(ys, model.m)
    T, n, mdim = len(data), model.n, model.m
    bu = model.offsets(us, T)
    out = FilterResult(np.empty((T, n)), np.empty((T, n, n)), np.empty((T, n)),
                       np.empty((T, n, n)), np.full((T, mdim), np.nan),
                       np.full((T, mdim, mdim), np.nan), observed)
    m, P = model.m0, model.P0
    for t in range(T):
        m, P = predict(m, P, model.A, model.Q, bu[t])
        out.pred_means[t], out.pred_covs[t] = m, P
        if observed[t]:
            m, P, out.innovations[t], out.S[t], _ = update(m, P, data[t], model.C,
                                                           model.R)
        out.means[t], out.covs[t] = m, P
    return out


def rts_smoother(model: LinearGaussianSSM, result: FilterResult):
    """Rauch-Tung-Striebel: for t = T-1..1, G_t = P_t A^T (P_{t+1}^-)^{-1},
    m_t^s = m_t + G_t (m_{t+1}^s - m_{t+1}^-), P_t^s = P_t + G_t (P_{t+1}^s - P_{t+1}^-) G_t^T.
    Returns smoothed means (T, n) and covariances (T, n, n) of x_1..x_T."""
    ms, Ps = result.means.copy(), result.covs.copy()
    for t in range(len(ms) - 2, -1, -1):
        G = np.linalg.solve(result.pred_covs[t + 1], model.A @ result.covs[t]).T
        ms[t] = result.means[t] + G @ (ms[t + 1] - result.pred_means[t + 1])
        Ps[t] = result.covs[t] + G @ (Ps[t + 1] - result.pred_covs[t + 1]) @ G.T
    return ms, Ps


def gls_static(C: np.ndarray, R: np.ndarray, ys, m0: np.ndarray, P0: np.ndarray):
    """Batch generalised least squares for a constant state x observed T times,
    y_t = C x + v_t, with the prior N(m0, P0) as one more observation:

        P = (P0^{-1} + sum_t C^T R^{-1} C)^{-1},
        x_hat = P (P0^{-1} m0 + sum_t C^T R^{-1} y_t).

    ``ys``: (T, m). Returns ``(x_hat (n,), P (n, n))``."""
    C = _matrix(C, "C")
    mdim, n = C.shape
    R, P0 = _matrix(R, "R", (mdim, mdim)), _matrix(P0, "P0", (n, n))
    m0 = _vector(m0, "m0", n)
    ys = np.asarray(ys, dtype=np.float64)
    if ys.ndim != 2 or ys.shape[1] != mdim:
        raise ValueError(f"ys must have shape (T, {mdim}), got {ys.shape}")
    # stack: [I; C; ...; C] x = [m0; y_1; ...; y_T] with block-diagonal weight
    H = np.vstack([np.eye(n)] + [C] * len(ys))
    z = np.concatenate([m0, ys.reshape(-1)])
    W = np.linalg.inv(_block_diag([P0] + [R] * len(ys)))
    info = H.T @ W @ H
    return np.linalg.solve(info, H.T @ W @ z), np.linalg.inv(info)


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    size = sum(b.shape[0] for b in blocks)
    out, i = np.zeros((size, size)), 0
    for b in blocks:
        k = b.shape[0]
        out[i:i + k, i:i + k] = b
        i += k
    return out


def nees(xs: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """Normalised estimation error squared e_t^T P_t^{-1} e_t, e_t = x_t - m_t; shape
    (..., T) from xs, means (..., T, n) and covs (..., T, n, n). Its mean is n for a
    consistent filter (chi-square with n degrees of freedom)."""
    e = np.asarray(xs, dtype=np.float64) - np.asarray(means, dtype=np.float64)
    if e.shape != np.shape(covs)[:-1]:
        raise ValueError(f"xs/means {e.shape} and covs {np.shape(covs)} do not match")
    return np.einsum("...i,...i->...", e, np.linalg.solve(covs, e[..., None])[..., 0])


def nis(innovations: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Normalised innovation squared e_t^T S_t^{-1} e_t (chi-square, m degrees of
    freedom for a consistent filter); NaN where the observation was missing."""
    e = np.asarray(innovations, dtype=np.float64)
    if e.shape != np.shape(S)[:-1]:
        raise ValueError(f"innovations {e.shape} and S {np.shape(S)} do not match")
    out = np.full(e.shape[:-1], np.nan)
    ok = ~np.isnan(e).any(-1)
    out[ok] = np.einsum("ki,ki->k", e[ok], np.linalg.solve(S[ok], e[ok][..., None])[..., 0])
    return out


def chi2_band(dof: int, runs: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided ``level`` interval of the average of ``runs`` independent chi-square
    variables with ``dof`` degrees of freedom: chi2.ppf(a/2 or 1-a/2, runs*dof)/runs."""
    from scipy.stats import chi2

    if dof < 1 or runs < 1 or not 0 < level < 1:
        raise ValueError("dof and runs must be positive and level in (0, 1)")
    a = 1 - level
    return (float(chi2.ppf(a / 2, runs * dof) / runs),
            float(chi2.ppf(1 - a / 2, runs * dof) / runs))


# --- the recurrence as a convolution ---------------------------------------------------

def ssm_kernel(A, B, C, length: int) -> np.ndarray:
    """The impulse response K_k = C A^k B for k = 0..length-1, shape (length, m, p)."""
    A = _matrix(A, "A")
    n = A.shape[0]
    B, C = _matrix(B, "B", (n, None)), _matrix(C, "C", (None, n))
    out, AkB = np.empty((length, C.shape[0], B.shape[1])), B
    for k in range(length):
        out[k] = C @ AkB
        AkB = A @ AkB
    return out


def ssm_recurrence(A, B, C, us) -> np.ndarray:
    """Noise-free x_t = A x_{t-1} + B u_t, y_t = C x_t from x_0 = 0; us (T, p) ->
    ys (T, m)."""
    A, us = _matrix(A, "A"), _matrix(us, "us")
    B, C = _matrix(B, "B", (A.shape[0], us.shape[1])), _matrix(C, "C", (None, A.shape[0]))
    x, ys = np.zeros(A.shape[0]), np.empty((len(us), C.shape[0]))
    for t, u in enumerate(us):
        x = A @ x + B @ u
        ys[t] = C @ x
    return ys


def causal_convolution(kernel: np.ndarray, us) -> np.ndarray:
    """y_t = sum_{k=0}^{t} K_k u_{t-k} directly (O(T^2)); kernel (L >= T, m, p)."""
    us = _matrix(us, "us")
    if kernel.ndim != 3 or kernel.shape[2] != us.shape[1] or len(kernel) < len(us):
        raise ValueError(f"kernel {kernel.shape} does not fit inputs {us.shape}")
    T = len(us)
    return np.stack([np.einsum("kmp,kp->m", kernel[:t + 1], us[t::-1]) for t in range(T)])


def fft_convolution(kernel: np.ndarray, us) -> np.ndarray:
    """The same causal convolution with the FFT (zero-padded to 2T, O(T log T))."""
    us = _matrix(us, "us")
    if kernel.ndim != 3 or kernel.shape[2] != us.shape[1] or len(kernel) < len(us):
        raise ValueError(f"kernel {kernel.shape} does not fit inputs {us.shape}")
    T = len(us)
    Kf = np.fft.rfft(kernel[:T], n=2 * T, axis=0)          # (F, m, p)
    Uf = np.fft.rfft(us, n=2 * T, axis=0)                  # (F, p)
    return np.fft.irfft(np.einsum("fmp,fp->fm", Kf, Uf), n=2 * T, axis=0)[:T]


# --- nonlinear filters -----------------------------------------------------------------

def ekf_filter(f: Callable, F_jac: Callable, h: Callable, H_jac: Callable, Q, R, m0, P0,
               ys) -> tuple[np.ndarray, np.ndarray]:
    """Extended Kalman filter for x_t = f(x_{t-1}, t) + w_t, y_t = h(x_t) + v_t.

    Predict: m^- = f(m, t), P^- = F P F^T + Q with F = F_jac(m, t) (n, n);
    update as :func:`update` with e = y - h(m^-) and C replaced by H = H_jac(m^-) (m, n).
    ``ys`` (T, m), t runs 1..T. Returns means (T, n) and covariances (T, n, n)."""
    m0 = np.asarray(m0, dtype=np.float64)
    n = len(m0)
    Q, P0 = _matrix(Q, "Q", (n, n)), _matrix(P0, "P0", (n, n))
    R = _matrix(R, "R")
    ys = np.asarray(ys, dtype=np.float64)
    if ys.ndim != 2 or ys.shape[1] != R.shape[0]:
        raise ValueError(f"ys must have shape (T, {R.shape[0]}), got {ys.shape}")
    means, covs = np.empty((len(ys), n)), np.empty((len(ys), n, n))
    m, P = m0, P0
    for t, y in enumerate(ys, start=1):
        F = np.atleast_2d(F_jac(m, t))
        m, P = np.asarray(f(m, t), dtype=np.float64), F @ P @ F.T + Q
        H = np.atleast_2d(H_jac(m))
        e = y - np.asarray(h(m), dtype=np.float64)
        S = H @ P @ H.T + R
        K = np.linalg.solve(S, H @ P).T
        I_KH = np.eye(n) - K @ H
        m, P = m + K @ e, I_KH @ P @ I_KH.T + K @ R @ K.T
        means[t - 1], covs[t - 1] = m, P
    return means, covs


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices (N,) of systematic resampling: one uniform u ~ U[0, 1/N), points
    u + i/N, i = 0..N-1, mapped through the cumulative weights."""
    w = _weights(weights)
    N = len(w)
    points = (rng.random() + np.arange(N)) / N
    return np.minimum(np.searchsorted(np.cumsum(w), points), N - 1)


def multinomial_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices (N,) drawn independently with probabilities ``weights``."""
    w = _weights(weights)
    return np.minimum(np.searchsorted(np.cumsum(w), rng.random(len(w))), len(w) - 1)


def _weights(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError("weights must be a non-empty 1-D array of probabilities")
    return w


def bootstrap_particle_filter(sample_x0: Callable, propagate: Callable,
                              log_likelihood: Callable, ys, n_particles: int,
                              rng: np.random.Generator, resample: str = "systematic",
                              return_particles: bool = False):
    """Bootstrap filter (Gordon et al. 1993): at each t, propagate every particle
    through the dynamics, x^i_t ~ p(x_t | x^i_{t-1}), weight w^i ∝ p(y_t | x^i_t),
    estimate the mean sum_i w^i x^i_t, then resample N particles by the weights.

    ``sample_x0(N, rng)`` -> (N, n); ``propagate(x, t, rng)`` -> (N, n);
    ``log_likelihood(y, x)`` -> (N,). Returns means (T, n) and the effective sample
    sizes 1 / sum w_i^2 before resampling (T,); with ``return_particles`` also the
    resampled particles (T, N, n), an equally weighted sample of each p(x_t | y_1:t)."""
    if not isinstance(n_particles, int) or n_particles < 1:
        raise ValueError(f"n_particles must be a positive int, got {n_particles!r}")
    draw = {"systematic": systematic_resample, "multinomial": multinomial_resample}
    if resample not in draw:
        raise ValueError(f"resample must be one of {sorted(draw)}, got {resample!r}")
    ys = np.asarray(ys, dtype=np.float64)
    if ys.ndim == 1:
        ys = ys[:, None]
    x = np.asarray(sample_x0(n_particles, rng), dtype=np.float64).reshape(n_particles, -1)
    means, ess = np.empty((len(ys), x.shape[1])), np.empty(len(ys))
    kept = np.empty((len(ys),) + x.shape) if return_particles else None
    for t, y in enumerate(ys, start=1):
        x = np.asarray(propagate(x, t, rng)).reshape(n_particles, -1)
        logw = np.asarray(log_likelihood(y, x), dtype=np.float64)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        means[t - 1], ess[t - 1] = w @ x, 1.0 / np.sum(w ** 2)
        x = x[draw[resample](w, rng)]
        if kept is not None:
            kept[t - 1] = x
    return (means, ess, kept) if return_particles else (means, ess)


# --- the univariate nonstationary growth model ----------------------------------------

UNGM_Q, UNGM_R = 10.0, 1.0


def ungm_step(x, t: int):
    """f(x, t) = x/2 + 25 x / (1 + x^2) + 8 cos(1.2 t) (elementwise)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x + 25 * x / (1 + x ** 2) + 8 * np.cos(1.2 * t)


def ungm_simulate(T: int, rng: np.random.Generator, q: float = UNGM_Q, r: float = UNGM_R,
                  p0: float = 10.0):
    """x_0 ~ N(0, p0), x_t = f(x_{t-1}, t) + N(0, q), y_t = x_t^2 / 20 + N(0, r);
    returns xs (T,) and ys (T,)."""
    x = rng.normal(0.0, np.sqrt(p0))
    xs, ys = np.empty(T), np.empty(T)
    for t in range(1, T + 1):
        x = ungm_step(x, t) + rng.normal(0.0, np.sqrt(q))
        xs[t - 1], ys[t - 1] = x, x ** 2 / 20 + rng.normal(0.0, np.sqrt(r))
    return xs, ys
