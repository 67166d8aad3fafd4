"""Tests of dlbook.moe: the Switch top-1 mixture-of-experts layer and its balancing loss."""
import pytest
import torch

from dlbook import moe
from dlbook.transformer import DecoderLM, TransformerConfig


def test_routing_equals_per_token_loop():
    torch.manual_seed(0)
    layer = moe.SwitchFeedForward(8, 16, n_experts=4)
    x = torch.randn(3, 5, 8)
    y = layer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, moe.switch_reference(layer, x))
    assert int(layer.counts.sum()) == 15 and layer.dropped == 0


def test_balancing_loss_values():
    probs = torch.full((8, 4), 0.25)
    expert = torch.arange(8) % 4
    torch.testing.assert_close(moe.load_balancing_loss(probs, expert), torch.tensor(1.0))
    collapsed = torch.zeros(8, 4); collapsed[:, 0] = 1
    torch.testing.assert_close(moe.load_balancing_loss(collapsed, torch.zeros(8, dtype=torch.long)),
                               torch.tensor(4.0))
    with pytest.raises(ValueError):
        moe.load_balancing_loss(probs[0], expert)


def test_gradients_reach_router_and_experts():
    torch.manual_seed(1)
    layer = moe.SwitchFeedForward(8, 16, n_experts=3)
    x = torch.randn(20, 8)
    (layer(x).sum() + layer.aux_loss).backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    used = layer.counts > 0
    for e, ffn in enumerate(layer.experts):
        assert (ffn.up.weight.grad is not None) == bool(used[e])


def test_capacity_drops_overflow():
    torch.manual_seed(2)
    layer = moe.SwitchFeedForward(4, 8, n_experts=2, capacity_factor=0.5)
    with torch.no_grad():
        layer.router.weight.zero_(); layer.router.weight[0] = 1.0
    x = torch.ones(10, 4)                                       # every token picks expert 0
    y = layer(x)
    assert layer.capacity(10) == 3 and layer.dropped == 7
    assert (y[3:] == 0).all() and (y[:3] != 0).any()


def test_inside_a_transformer():
    torch.manual_seed(3)
    cfg = TransformerConfig(d_model=16, n_heads=2, n_layers=2, d_mlp=32)
    model = DecoderLM(cfg, vocab_size=11, max_len=8)
    for blk in model.transformer.blocks:
        blk.mlp = moe.SwitchFeedForward(16, 32, 4)
    out = model(torch.randint(0, 11, (2, 8)))
    assert out.shape == (2, 8, 11)
    assert moe.expert_counts(model).shape == (2, 4)
    assert moe.aux_loss(model).dim() == 0
    with pytest.raises(ValueError, match="no SwitchFeedForward"):
        moe.aux_loss(torch.nn.Linear(2, 2))


def test_bad_arguments():
    with pytest.raises(ValueError):
        moe.SwitchFeedForward(4, 8, 0)
    with pytest.raises(ValueError):
        moe.SwitchFeedForward(4, 8, 2, capacity_factor=0)
    with pytest.raises(ValueError, match="d_model"):
        moe.SwitchFeedForward(4, 8, 2)(torch.randn(3, 5))
