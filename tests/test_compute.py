"""dlbook.compute: analytic FLOPs against torch's FlopCounterMode, energy arithmetic."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import cnn, compute, mlp, transformer


def test_matmul_and_conv_formulas():
    assert compute.matmul_flops(3, 4, 5) == 120
    assert compute.linear_flops(128, 64, 32) == 2 * 128 * 64 * 32
    assert compute.conv2d_flops(2, 3, 4, 5, 6, 7) == 2 * 3 * 25 * 4 * 6 * 7 * 2
    assert compute.attention_flops(2, 4, 8, 8, 16) == 4 * 2 * 4 * 8 * 8 * 16


def test_anchor_mlp_forward_and_backward():
    # the anchor's numbers: Linear(64,32)-ReLU-Linear(32,10) on a batch of 128
    layers = compute.mlp_layers((64, 32, 10), 128)
    assert compute.forward_flops(layers) == 606_208
    assert compute.training_flops(layers) == 1_294_336
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    assert compute.count_training_flops(model, F.cross_entropy, x, y) == (606_208,
                                                                           1_294_336)


def test_book_mlp_equals_counter():
    model = mlp.MLP(mlp.MLPConfig((20, 16, 8, 3)))
    x, y = torch.randn(5, 20), torch.randint(0, 3, (5,))
    layers = compute.mlp_layers((20, 16, 8, 3), 5)
    fwd, both = compute.count_training_flops(model, F.cross_entropy, x, y)
    assert fwd == compute.forward_flops(layers)
    assert both == compute.training_flops(layers) < 3 * fwd
    assert all(p.grad is None for p in model.parameters())


def test_lenet_equals_counter():
    model = cnn.LeNet(c1=3, c2=4, hidden=8)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 7])
    layers = compute.lenet_layers(model, 2)
    fwd, both = compute.count_training_flops(model, F.cross_entropy, x, y)
    assert (fwd, both) == (compute.forward_flops(layers), compute.training_flops(layers))
    with pytest.raises(TypeError):
        compute.lenet_layers(nn.Linear(2, 2), 1)


def test_decoder_equals_counter_and_is_three_forwards():
    cfg = transformer.TransformerConfig(d_model=16, n_heads=2, n_layers=2)
    model = transformer.DecoderLM(cfg, vocab_size=11, max_len=8)
    ids = torch.randint(0, 11, (3, 8))
    loss = lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten())  # noqa: E731
    layers = compute.decoder_layers(16, 2, 2, cfg.d_mlp, 11, 3, 8)
    fwd, both = compute.count_training_flops(model, loss, ids, ids)
    assert fwd == compute.forward_flops(layers)
    assert both == compute.training_flops(layers) == 3 * fwd


def test_energy_arithmetic():
    a = compute.EnergyAssumptions(power_w=330.0, pue=1.1, grid_g_per_kwh=429.0)
    seconds = compute.run_seconds(3.14e23, 24.6e12)
    kwh = compute.energy_kwh(seconds, a)
    assert kwh == pytest.approx(3.14e23 / 24.6e12 * 330 * 1.1 / 3.6e6)
    assert compute.co2_kg(kwh, a) == pytest.approx(kwh * 0.429)
    assert compute.kaplan_training_flops(175e9, 300e9) == pytest.approx(3.15e23)


@pytest.mark.parametrize("kwargs", [dict(power_w=0, pue=1.1, grid_g_per_kwh=1),
                                    dict(power_w=1, pue=0.9, grid_g_per_kwh=1),
                                    dict(power_w=1, pue=1.1, grid_g_per_kwh=-1)])
def test_bad_assumptions(kwargs):
    with pytest.raises(ValueError):
        compute.EnergyAssumptions(**kwargs)


def test_bad_sizes():
    with pytest.raises(ValueError):
        compute.matmul_flops(0, 1, 1)
    with pytest.raises(ValueError):
        compute.conv2d_flops(1, 1, 1, 1.5, 1, 1)
    with pytest.raises(ValueError):
        compute.decoder_layers(10, 3, 1, 40, 5, 1, 4)
    with pytest.raises(ValueError):
        compute.run_seconds(1.0, 0.0)
    with pytest.raises(ValueError):
        compute.mlp_layers((5,), 1)
