"""Tests of dlbook.kalman: shapes; the filter and the RTS smoother against pykalman and
filterpy (with and without missing observations); the EKF against filterpy's
ExtendedKalmanFilter; the GLS identity; the convolution identity; NEES/NIS; the particle
filter approaching the Kalman filter as particles grow; bad input."""
import numpy as np
import pytest

pykalman = pytest.importorskip("pykalman")
fk = pytest.importorskip("filterpy.kalman")

from dlbook import kalman as K  # noqa: E402

DT = 0.1
A = np.array([[1.0, DT], [0.0, 1.0]])
B = np.array([[DT ** 2 / 2], [DT]])
C = np.array([[1.0, 0.0]])
Q = 0.5 * np.array([[DT ** 3 / 3, DT ** 2 / 2], [DT ** 2 / 2, DT]])
R = np.array([[0.3]])


def model(with_input=True):
    return K.LinearGaussianSSM(A=A, B=B if with_input else None, C=C, Q=Q, R=R,
                               m0=np.array([0.5, -0.2]), P0=np.diag([1.0, 0.5]))


def data(T=40, seed=0, missing=True, with_input=True):
    rng = np.random.default_rng(seed)
    us = np.cos(np.arange(T) / 4)[:, None] if with_input else None
    xs, ys = model(with_input).simulate(T, rng, us)
    if missing:
        ys[10:15] = np.nan
    return xs, ys, us


def pykalman_filter(mod, us, T):
    bu = mod.offsets(us, T)
    return pykalman.KalmanFilter(
        transition_matrices=mod.A, observation_matrices=mod.C, transition_covariance=mod.Q,
        observation_covariance=mod.R, transition_offsets=bu[1:],
        observation_offsets=np.zeros(mod.m), initial_state_mean=mod.A @ mod.m0 + bu[0],
        initial_state_covariance=mod.A @ mod.P0 @ mod.A.T + mod.Q)


def test_shapes():
    xs, ys, us = data()
    res = K.kalman_filter(model(), ys, us)
    assert xs.shape == (40, 2) and ys.shape == (40, 1)
    assert res.means.shape == (40, 2) and res.covs.shape == (40, 2, 2)
    assert res.innovations.shape == (40, 1) and res.S.shape == (40, 1, 1)
    assert res.observed.sum() == 35 and np.isnan(res.innovations[10:15]).all()
    ms, Ps = K.rts_smoother(model(), res)
    assert ms.shape == (40, 2) and Ps.shape == (40, 2, 2)
    assert K.nees(xs, res.means, res.covs).shape == (40,)
    assert np.isnan(K.nis(res.innovations, res.S)[10:15]).all()


@pytest.mark.parametrize("missing", [False, True])
def test_filter_and_smoother_equal_pykalman(missing):
    xs, ys, us = data(missing=missing)
    res = K.kalman_filter(model(), ys, us)
    ref = pykalman_filter(model(), us, len(ys))
    obs = np.ma.masked_invalid(ys)
    means, covs = ref.filter(obs)
    np.testing.assert_allclose(res.means, means, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.covs, covs, rtol=0, atol=1e-10)
    sm, sP = ref.smooth(obs)
    ms, Ps = K.rts_smoother(model(), res)
    np.testing.assert_allclose(ms, sm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(Ps, sP, rtol=0, atol=1e-10)


def test_masked_array_input_equals_nan_rows():
    _, ys, us = data()
    a = K.kalman_filter(model(), ys, us)
    b = K.kalman_filter(model(), np.ma.masked_invalid(ys), us)
    np.testing.assert_array_equal(a.means, b.means)


def test_filter_and_smoother_equal_filterpy():
    _, ys, us = data()
    mod = model()
    kf = fk.KalmanFilter(dim_x=2, dim_z=1, dim_u=1)
    kf.F, kf.B, kf.H, kf.Q, kf.R = A, B, C, Q, R
    kf.x, kf.P = mod.m0.copy(), mod.P0.copy()
    means, covs = [], []
    for y, u in zip(ys, us):
        kf.predict(u=u)
        kf.update(None if np.isnan(y).any() else y)
        means.append(np.ravel(kf.x))
        covs.append(kf.P.copy())
    res = K.kalman_filter(mod, ys, us)
    np.testing.assert_allclose(res.means, np.array(means), rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.covs, np.array(covs), rtol=0, atol=1e-10)
    # filterpy's rts_smoother has no control input: compare on the model without B
    _, ys0, _ = data(with_input=False)
    res0 = K.kalman_filter(model(False), ys0)
    x, P, _, _ = fk.rts_smoother(res0.means, res0.covs, [A] * len(ys0), [Q] * len(ys0))
    ms, Ps = K.rts_smoother(model(False), res0)
    np.testing.assert_allclose(ms, x, rtol=0, atol=1e-10)
    np.testing.assert_allclose(Ps, P, rtol=0, atol=1e-10)


def test_static_state_filter_equals_gls():
    rng = np.random.default_rng(1)
    Cs = rng.normal(size=(3, 2))
    Rs = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]])
    mod = K.LinearGaussianSSM(A=np.eye(2), C=Cs, Q=np.zeros((2, 2)), R=Rs,
                              m0=np.array([1.0, -1.0]), P0=4 * np.eye(2))
    _, ys = mod.simulate(25, rng)
    res = K.kalman_filter(mod, ys)
    x_hat, P = K.gls_static(Cs, Rs, ys, mod.m0, mod.P0)
    np.testing.assert_allclose(res.means[-1], x_hat, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.covs[-1], P, rtol=0, atol=1e-10)


def test_recurrence_equals_direct_and_fft_convolution():
    rng = np.random.default_rng(2)
    n, p, m, T = 4, 2, 3, 64
    A_ = rng.normal(size=(n, n))
    A_ *= 0.9 / np.abs(np.linalg.eigvals(A_)).max()
    B_, C_, us = rng.normal(size=(n, p)), rng.normal(size=(m, n)), rng.normal(size=(T, p))
    kernel = K.ssm_kernel(A_, B_, C_, T)
    assert kernel.shape == (T, m, p)
    np.testing.assert_allclose(kernel[2], C_ @ A_ @ A_ @ B_, atol=1e-12)
    ys = K.ssm_recurrence(A_, B_, C_, us)
    np.testing.assert_allclose(K.causal_convolution(kernel, us), ys, rtol=0, atol=1e-10)
    np.testing.assert_allclose(K.fft_convolution(kernel, us), ys, rtol=0, atol=1e-10)


def test_ekf_equals_filterpy_on_pendulum():
    dt, g = 0.01, 9.81
    Qp = 0.01 * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
    Rp = np.array([[0.1]])

    def f(x, t):
        return np.array([x[0] + x[1] * dt, x[1] - g * np.sin(x[0]) * dt])

    def F(x, t):
        return np.array([[1.0, dt], [-g * np.cos(x[0]) * dt, 1.0]])

    def h(x):
        return np.array([np.sin(x[0])])

    def H(x):
        return np.array([[np.cos(x[0]), 0.0]])

    rng = np.random.default_rng(3)
    ys = np.sin(1.2 * np.cos(np.arange(200) * 0.03))[:, None] + rng.normal(0, 0.3, (200, 1))
    m, P = K.ekf_filter(f, F, h, H, Qp, Rp, np.array([1.0, 0.0]), 0.5 * np.eye(2), ys)

    class Pendulum(fk.ExtendedKalmanFilter):
        def predict_x(self, u=0):
            self.x = f(self.x, 0)

    ekf = Pendulum(dim_x=2, dim_z=1)
    ekf.x, ekf.P, ekf.Q, ekf.R = np.array([1.0, 0.0]), 0.5 * np.eye(2), Qp, Rp
    for t, y in enumerate(ys):
        ekf.F = F(ekf.x, t)
        ekf.predict()
        ekf.update(y, H, h)
        np.testing.assert_allclose(m[t], np.ravel(ekf.x), rtol=0, atol=1e-10)
        np.testing.assert_allclose(P[t], ekf.P, rtol=0, atol=1e-10)


def test_consistent_filter_has_mean_nees_near_state_dimension():
    mod = model(False)
    vals = []
    for s in range(30):
        xs, ys = mod.simulate(50, np.random.default_rng(100 + s))
        res = K.kalman_filter(mod, ys)
        vals.append(K.nees(xs, res.means, res.covs).mean())
        assert np.nanmean(K.nis(res.innovations, res.S)) < 3
    lo, hi = K.chi2_band(2, 30 * 50)
    assert lo < 2 < hi
    assert abs(np.mean(vals) - 2) < 0.2


def test_chi2_band_matches_scipy():
    from scipy.stats import chi2
    lo, hi = K.chi2_band(3, 50, 0.95)
    assert lo == pytest.approx(chi2.ppf(0.025, 150) / 50)
    assert hi == pytest.approx(chi2.ppf(0.975, 150) / 50)


@pytest.mark.parametrize("resample", ["systematic", "multinomial"])
def test_particle_filter_approaches_kalman_mean(resample):
    mod = K.LinearGaussianSSM(A=[[0.9]], C=[[1.0]], Q=[[0.5]], R=[[0.4]], m0=[0.0],
                              P0=[[1.0]])
    _, ys = mod.simulate(30, np.random.default_rng(4))
    exact = K.kalman_filter(mod, ys).means[:, 0]
    errors = []
    for N in (50, 5000):
        means, ess = K.bootstrap_particle_filter(
            lambda n, rng: rng.normal(0.0, 1.0, (n, 1)),
            lambda x, t, rng: 0.9 * x + rng.normal(0.0, np.sqrt(0.5), x.shape),
            lambda y, x: -0.5 * (y[0] - x[:, 0]) ** 2 / 0.4, ys, N,
            np.random.default_rng(5), resample=resample)
        assert means.shape == (30, 1) and (ess <= N).all()
        errors.append(np.abs(means[:, 0] - exact).max())
    assert errors[1] < 0.1 and errors[1] < errors[0]


def test_resampling_keeps_heavy_particles():
    w = np.array([0.0, 0.7, 0.0, 0.3])
    idx = K.systematic_resample(w, np.random.default_rng(0))
    assert set(idx) <= {1, 3} and len(idx) == 4


def test_ungm_shapes_and_step():
    xs, ys = K.ungm_simulate(20, np.random.default_rng(0))
    assert xs.shape == ys.shape == (20,)
    assert K.ungm_step(0.0, 0) == pytest.approx(8.0)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="square"):
        K.LinearGaussianSSM(A=np.ones((2, 3)), C=C, Q=Q, R=R, m0=np.zeros(2), P0=np.eye(2))
    with pytest.raises(ValueError, match="Q"):
        K.LinearGaussianSSM(A=A, C=C, Q=np.eye(3), R=R, m0=np.zeros(2), P0=np.eye(2))
    with pytest.raises(ValueError, match="m0"):
        K.LinearGaussianSSM(A=A, C=C, Q=Q, R=R, m0=np.zeros(3), P0=np.eye(2))
    with pytest.raises(TypeError):
        K.LinearGaussianSSM(A="A", C=C, Q=Q, R=R, m0=np.zeros(2), P0=np.eye(2))
    with pytest.raises(ValueError, match="ys"):
        K.kalman_filter(model(), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="us"):
        K.kalman_filter(model(), np.zeros((10, 1)), np.zeros((9, 1)))
    with pytest.raises(TypeError):
        K.kalman_filter("model", np.zeros((10, 1)))
    with pytest.raises(ValueError, match="kernel"):
        K.fft_convolution(np.zeros((5, 1, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="weights"):
        K.systematic_resample(np.array([0.5, 0.2]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="resample"):
        K.bootstrap_particle_filter(None, None, None, np.zeros(3), 10,
                                    np.random.default_rng(0), resample="stratified")
    with pytest.raises(ValueError, match="match"):
        K.nees(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 3, 3)))


def test_pykalman_arguments_map_the_initial_state():
    xs, ys, us = data()
    res = K.kalman_filter(model(), ys, us)
    ref = pykalman.KalmanFilter(**K.pykalman_arguments(model(), us, len(ys)))
    means, _ = ref.filter(np.ma.masked_invalid(ys))
    np.testing.assert_allclose(res.means, means, rtol=0, atol=1e-10)
