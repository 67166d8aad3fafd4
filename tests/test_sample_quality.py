"""Tests of dlbook.sample_quality: the Fréchet distance against scipy, the yardstick's
statistics, determinism and cache, and bad input."""
import numpy as np
import pytest
import torch
from scipy import linalg

from dlbook import sample_quality as Q
from dlbook.cnn import LeNet


def scipy_frechet(mu1, s1, mu2, s2):
    """The usual FID computation (pytorch-fid): scipy.linalg.sqrtm of the product."""
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_spd(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    for d in (1, 3, 16, 64):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = random_spd(d, rng), random_spd(d, rng)
        ours = Q.frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
        assert ours == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-8, abs=1e-9)


def test_frechet_distance_closed_forms():
    d = 5
    mu = torch.randn(d, dtype=torch.float64)
    s = torch.diag(torch.arange(1.0, d + 1, dtype=torch.float64))
    assert abs(Q.frechet_distance(mu, s, mu, s)) < 1e-10               # identical Gaussians
    # isotropic: ||mu1 - mu2||^2 + d (sigma1 - sigma2)^2
    i = torch.eye(d, dtype=torch.float64)
    value = Q.frechet_distance(mu, 4 * i, mu + 1, 9 * i)
    assert value == pytest.approx(d * 1 + d * (2 - 3) ** 2, rel=1e-12)


def test_gaussian_statistics_and_too_few_samples():
    x = torch.randn(500, 4, dtype=torch.float64)
    mu, cov = Q.gaussian_statistics(x)
    torch.testing.assert_close(mu, x.mean(0))
    torch.testing.assert_close(cov, torch.from_numpy(np.cov(x.numpy(), rowvar=False)))
    with pytest.raises(ValueError, match="too few for the covariance of 4 features"):
        Q.gaussian_statistics(torch.randn(4, 4))
    with pytest.raises(ValueError, match="2-D"):
        Q.gaussian_statistics(torch.randn(10))
    with pytest.raises(ValueError, match="shapes do not match"):
        Q.frechet_distance(mu, cov, mu[:3], cov[:3, :3])


def test_check_images_rejects_bad_input():
    assert Q.check_images(torch.rand(2, 28, 28)).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"\(n, 1, 28, 28\)"):
        Q.check_images(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(n, 1, 28, 28\)"):
        Q.check_images(torch.rand(2, 32, 32))
    with pytest.raises(TypeError, match="floats"):
        Q.check_images(torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        Q.check_images(torch.rand(2, 28, 28) * 2 - 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        Q.check_images(np.zeros((2, 28, 28)))


def small_mnist(n=1500, seed=0):
    """A learnable stand-in for MNIST: digit-like blobs whose position encodes the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 40, (n, 28, 28), generator=g).to(torch.uint8)
    for k in range(10):
        r, c = 2 + 2 * (k // 5) * 6, 2 + (k % 5) * 5
        images[labels == k, r:r + 8, c:c + 4] = 255
    return images.numpy(), labels.numpy()


def test_yardstick_training_is_deterministic_and_scores():
    images, labels = small_mnist()
    config = Q.YardstickConfig(epochs=1, batch_size=64)
    a = Q.train_yardstick(images, labels, config, progress=False)
    b = Q.train_yardstick(images, labels, config, progress=False)
    for (name, p), q in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    x = torch.from_numpy(images).float() / 255
    assert Q.accuracy_on(a, images, labels) > 0.9
    feats = a.features(x)
    assert feats.shape == (len(x), 64) and feats.dtype == torch.float64 and (feats >= 0).all()
    probs = a.probabilities(x[:10])
    torch.testing.assert_close(probs.sum(1), torch.ones(10))
    hist = a.class_histogram(x)
    assert hist.sum() == len(x) and hist.shape == (10,)
    only_zeros = x[torch.from_numpy(labels) == 0]
    assert a.class_histogram(only_zeros).argmax() == 0
    assert 0.1 <= a.mean_confidence(x) <= 1
    # a set of images is at distance ~0 from itself, far from noise, and the floor is small
    assert abs(a.frechet_distance(x, x)) < 1e-6
    floor = Q.real_floor(a, x)
    noise = a.frechet_distance(x, torch.rand(len(x), 28, 28))
    assert 0 < floor < noise / 10
    report = a.report(only_zeros[:200], x)
    assert report["classes_covered"] <= 3 and report["frechet"] > floor


def test_load_yardstick_trains_once_then_loads(tmp_path, monkeypatch):
    images, labels = small_mnist(600)
    calls = []

    def fake_mnist(split):
        calls.append(split)
        return images, labels

    monkeypatch.setattr(Q, "load_mnist", fake_mnist)
    first = Q.load_yardstick(tmp_path, progress=False)
    assert calls == ["train", "test"] and Q.yardstick_path(tmp_path).is_file()
    second = Q.load_yardstick(tmp_path, progress=False)
    assert calls == ["train", "test"]                      # loaded, not retrained
    for p, q in zip(first.net.state_dict().values(), second.net.state_dict().values()):
        assert torch.equal(p, q)
    assert 0 <= Q.saved_test_accuracy(tmp_path) <= 1
    saved = torch.load(Q.yardstick_path(tmp_path), weights_only=True)
    saved["config"]["epochs"] = 99
    torch.save(saved, Q.yardstick_path(tmp_path))
    with pytest.raises(ValueError, match="delete it to retrain"):
        Q.load_yardstick(tmp_path)


def test_yardstick_wraps_an_untrained_lenet_on_any_batch_size():
    stick = Q.DigitYardstick(LeNet())
    x = torch.rand(7, 1, 28, 28)
    # the batch size may change the convolution kernel and so the float32 rounding
    torch.testing.assert_close(stick.features(x, batch_size=3), stick.features(x, batch_size=100),
                               atol=1e-6, rtol=1e-5)
    assert stick.features(x[:0]).shape == (0, 64)


def test_lenet_penultimate_feeds_the_output_layer():
    net = LeNet().eval()
    x = torch.rand(5, 1, 28, 28)
    h = net.penultimate(x)
    assert h.shape == (5, 64) and (h >= 0).all()
    torch.testing.assert_close(net.fc2(h), net(x))
