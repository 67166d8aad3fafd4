import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import mlp


@pytest.mark.parametrize("name,ref", [("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)])
def test_activations_match_torch(name, ref):
    t = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    assert torch.allclose(mlp.activation(name)(t), ref(t), atol=1e-12)


def test_tanh_keeps_relative_precision_for_tiny_inputs():
    t = torch.tensor([1e-20, -3e-18, 1e-8, 40.0, -800.0], dtype=torch.float64)
    assert torch.allclose(mlp.tanh(t), torch.tanh(t), rtol=1e-14, atol=0)


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        mlp.activation("gelu")
    with pytest.raises(ValueError):
        mlp.MLPConfig((3, 2), activation="swish")


def test_one_hot():
    y = torch.tensor([2, 0, 1])
    assert torch.equal(mlp.one_hot(y, 4), F.one_hot(y, 4).float())
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        mlp.one_hot(torch.tensor([3]), 3)
    with pytest.raises(TypeError, match="integer"):
        mlp.one_hot(torch.tensor([0.5]), 3)


def test_softmax_matches_torch_and_is_stable():
    z = torch.randn(5, 7, dtype=torch.float64) * 50 + 1000
    for T in (0.3, 1.0, 4.0):
        assert torch.allclose(mlp.softmax(z, T), torch.softmax(z / T, dim=-1), atol=1e-12)
    assert torch.isfinite(mlp.softmax(torch.tensor([[1e4, 0.0]]))).all()
    with pytest.raises(ValueError, match="temperature"):
        mlp.softmax(z, 0.0)


def test_losses_match_torch():
    logits = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (9,))
    ours, ref = mlp.cross_entropy(logits, y), F.cross_entropy(logits, y)
    assert torch.allclose(ours, ref, atol=1e-12)
    g1, = torch.autograd.grad(ours, logits)
    g2, = torch.autograd.grad(ref, logits)
    assert torch.allclose(g1, g2, atol=1e-12)
    onehot = mlp.one_hot(y, 5).double()
    assert torch.allclose(mlp.cross_entropy(logits, onehot), ref, atol=1e-12)
    out = torch.randn(4, 3)
    tgt = torch.randn(4, 3)
    assert torch.allclose(mlp.mse_loss(out, tgt), F.mse_loss(out, tgt, reduction="sum"))
    assert torch.allclose(mlp.mse_loss(out, tgt, "mean"), F.mse_loss(out, tgt))


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        mlp.mse_loss(torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="do not match"):
        mlp.cross_entropy(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        mlp.cross_entropy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        mlp.mse_loss(torch.zeros(2), torch.zeros(2), "max")


def test_forward_propagation_shapes_and_errors():
    X = torch.randn(6, 400)
    net = mlp.MLP(mlp.MLPConfig((400, 100, 100, 10)))
    zs = net.hidden_states(X)
    assert [tuple(z.shape) for z in zs] == [(6, 400), (6, 100), (6, 100), (6, 10)]
    assert net.num_parameters() == 51210
    assert (zs[1] >= 0).all()  # ReLU hidden layer
    with pytest.raises(ValueError, match="layer 1"):
        mlp.forward_propagation(torch.randn(6, 399), list(net.weights), list(net.biases))
    with pytest.raises(ValueError, match="as many weights as biases"):
        mlp.forward_propagation(X, list(net.weights), [])
    with pytest.raises(ValueError, match="sizes"):
        mlp.MLPConfig((10,))


def test_mlp_equals_linear_stack_in_values_and_gradients():
    torch.manual_seed(0)
    layers = [nn.Linear(20, 16), nn.Linear(16, 8), nn.Linear(8, 3)]
    ref = nn.Sequential(layers[0], nn.Tanh(), layers[1], nn.Tanh(), layers[2])
    ours = mlp.MLP.from_linear(layers, activation="tanh")
    X = torch.randn(11, 20)
    y = torch.randint(0, 3, (11,))
    out_ours, out_ref = ours(X), ref(X)
    assert torch.allclose(out_ours, out_ref, atol=1e-6)
    F.cross_entropy(out_ours, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for w, lin in zip(ours.weights, layers):
        assert torch.allclose(w.grad, lin.weight.grad.T, atol=1e-6)
    with pytest.raises(TypeError, match="nn.Linear"):
        mlp.MLP.from_linear([nn.ReLU()])


def test_mlp_flattens_images():
    net = mlp.MLP(mlp.MLPConfig((16, 4, 2)))
    assert net(torch.randn(3, 4, 4)).shape == (3, 2)
