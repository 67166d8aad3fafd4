import pytest
import torch

from dlbook import backprop, mlp


@pytest.mark.parametrize("hidden", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_mlp_backward_matches_autograd(hidden, loss):
    torch.manual_seed(0)
    model = mlp.MLP(mlp.MLPConfig((6, 5, 4, 3), hidden)).double()
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randint(0, 3, (9,))
    value, gw, gb, deltas = backprop.mlp_backward(x, y, list(model.weights), list(model.biases), hidden, loss)
    ref = mlp.cross_entropy(model(x), y) if loss == "cross_entropy" else \
        mlp.mse_loss(model(x), mlp.one_hot(y, 3).double())
    ref.backward()
    assert value.item() == pytest.approx(ref.item(), rel=1e-12)
    for g, w in zip(gw, model.weights):
        assert g.shape == w.shape and torch.allclose(g, w.grad, atol=1e-12)
    for g, b in zip(gb, model.biases):
        assert g.shape == b.shape and torch.allclose(g, b.grad, atol=1e-12)
    assert [d.shape for d in deltas] == [(9, 5), (9, 4), (9, 3)]


def test_init_schemes():
    assert backprop.init_std("he", 50, 10) == pytest.approx((2 / 50) ** 0.5)
    assert backprop.init_std("xavier", 50, 10) == pytest.approx((2 / 60) ** 0.5)
    ws = [torch.empty(400, 300)]
    bs = [torch.ones(1, 300)]
    backprop.initialize_(ws, bs, "he", generator=torch.Generator().manual_seed(0))
    assert ws[0].std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.02) and bs[0].abs().sum() == 0
    with pytest.raises(ValueError, match="unknown initialisation"):
        backprop.init_std("lecun", 3, 3)
    with pytest.raises(ValueError):
        backprop.mlp_backward(torch.randn(3), torch.tensor([0]), ws, bs)
    with pytest.raises(ValueError, match="loss"):
        backprop.loss_gradient(torch.randn(2, 3), torch.tensor([0, 1]), "hinge")
