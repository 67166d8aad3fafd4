import pytest
import torch
from torch import nn

from dlbook.normalization import BatchNorm, DynamicTanh, batch_norm_backward, deep_mlp


def test_batchnorm_matches_torch_training_and_eval():
    torch.manual_seed(0)
    ours, ref = BatchNorm(5, momentum=0.2).double(), nn.BatchNorm1d(5, momentum=0.2).double()
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2, 5))
            m.bias.copy_(torch.linspace(-1, 1, 5))
    for step in range(4):
        x = torch.randn(8, 5, dtype=torch.float64) * 3 + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        assert torch.allclose(ya, yb, atol=1e-12)
        (ya ** 3).sum().backward()
        (yb ** 3).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, atol=1e-10)
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-12)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-12)
    assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-9)
    assert torch.allclose(ours.bias.grad, ref.bias.grad, atol=1e-9)
    assert int(ours.num_batches_tracked) == 4
    ours.eval(), ref.eval()
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(ours(x), ref(x), atol=1e-12)


def test_batchnorm_backward_formula():
    torch.manual_seed(1)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(4, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(7, 4, dtype=torch.float64)
    y = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    y.backward(dy)
    dx, dg, db = batch_norm_backward(dy, x.detach(), gamma.detach())
    assert torch.allclose(dx, x.grad, atol=1e-10)
    assert torch.allclose(dg, gamma.grad, atol=1e-10) and torch.allclose(db, beta.grad, atol=1e-10)


def test_batchnorm_bad_input():
    with pytest.raises(ValueError):
        BatchNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=2.0)
    bn = BatchNorm(3)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        bn(torch.randn(4, 2))
    with pytest.raises(ValueError, match="2 samples"):
        bn(torch.randn(1, 3))


def test_dyt():
    dyt = DynamicTanh(6, alpha_init=0.7)
    x = torch.randn(2, 3, 6)
    assert dyt(x).shape == x.shape
    assert torch.allclose(dyt(x), torch.tanh(0.7 * x))
    dyt(x).sum().backward()
    assert dyt.alpha.grad is not None and dyt.alpha.grad.shape == ()
    assert sum(p.numel() for p in dyt.parameters()) == 13
    with pytest.raises(ValueError):
        dyt(torch.randn(2, 5))
    with pytest.raises(ValueError):
        DynamicTanh(-1)


@pytest.mark.parametrize("norm", ["none", "batch", "dyt"])
def test_deep_mlp(norm):
    torch.manual_seed(0)
    model = deep_mlp([64, 32, 32, 10], norm=norm)
    assert model(torch.randn(5, 8, 8)).shape == (5, 10)
    with pytest.raises(ValueError):
        deep_mlp([4, 2], norm="layer")
