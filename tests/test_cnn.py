"""Tests of dlbook.cnn: convolutions and pooling against torch, models' shapes, arithmetic."""
import pytest
import torch
import torch.nn.functional as F

from dlbook import cnn


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2)])
def test_convolutions_match_torch(stride, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, b, stride=stride, padding=padding)
    for fn in (cnn.conv2d_loops, cnn.conv2d_im2col):
        out = fn(x, w, b, stride=stride, padding=padding)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref)


def test_im2col_gradient_matches_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    cnn.conv2d_im2col(x, w, padding=1).square().sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    F.conv2d(x, w, padding=1).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_im2col_shape_and_order():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    cols = cnn.im2col(x, 2, 2, stride=2)
    assert cols.shape == (1, 4, 4)
    assert cols[0, :, 0].tolist() == [0.0, 1.0, 4.0, 5.0]


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (2, 1)])
def test_max_pool_matches_torch(kernel, stride):
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(cnn.max_pool2d(x, kernel, stride),
                               F.max_pool2d(x, kernel, stride if stride else kernel))


def test_bad_inputs():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError):
        cnn.conv2d_loops(x, torch.randn(3, 1, 3, 3))          # channel mismatch
    with pytest.raises(ValueError):
        cnn.conv2d_im2col(x[0], torch.randn(3, 2, 3, 3))      # not 4-D
    with pytest.raises(TypeError):
        cnn.conv2d_im2col([[1.0]], torch.randn(3, 2, 3, 3))
    with pytest.raises(ValueError):
        cnn.output_size(2, 5)
    with pytest.raises(ValueError):
        cnn.receptive_field([3, 3], [1])
    with pytest.raises(ValueError):
        cnn.LeNet(activation="sigmoid")
    with pytest.raises(ValueError):
        cnn.freeze_first(cnn.LeNet(), 5)
    with pytest.raises(ValueError):
        cnn.scaled_convnet_cost(depth=0)


def test_arithmetic():
    assert cnn.output_size(28, 5, 1, 2) == 28
    assert cnn.receptive_field([3, 3]) == 5
    assert cnn.receptive_field([3, 3, 3]) == 7
    assert cnn.receptive_field([5, 2, 5, 2], [1, 2, 1, 2]) == 16
    assert cnn.conv_params(8, 8, 3) == 8 * 73
    p1, m1 = cnn.scaled_convnet_cost()
    p2, m2 = cnn.scaled_convnet_cost(depth=2.0)
    _, m3 = cnn.scaled_convnet_cost(resolution=2.0)
    assert m3 == 4 * m1 and m2 > 1.9 * m1 and p2 > p1
    d, w, r = cnn.compound_multipliers(1.0)
    assert abs(d * w * w * r * r - 1.92) < 0.01


def test_models_shapes_and_freezing():
    net = cnn.LeNet()
    x = torch.randn(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    assert [f.shape for f in net.features(x)] == [(3, 6, 14, 14), (3, 16, 5, 5)]
    cnn.freeze_first(net, 2)
    assert cnn.count_parameters(net, trainable_only=True) == 400 * 64 + 64 + 650
    block = cnn.Inception(8, 4, 4, 6, 2, 3, 2)
    assert block(torch.randn(2, 8, 7, 7)).shape == (2, 15, 7, 7)
    for residual in (False, True):
        assert cnn.DeepConvNet(3, residual=residual)(torch.randn(2, 8, 8)).shape == (2, 10)


def test_random_intensity():
    layer = cnn.RandomIntensity(0.5, 1.5)
    x = torch.ones(4, 1, 3, 3)
    y = layer(x)
    assert y.shape == x.shape and ((y >= 0.5) & (y <= 1.5)).all()
    assert torch.equal(layer.eval()(x), x)
    with pytest.raises(ValueError):
        cnn.RandomIntensity(2.0, 1.0)
