"""Tests of dlbook.lora: LoRA adapters, merging, truncated-SVD compression."""
import pytest
import torch
from torch import nn

from dlbook import lora
from dlbook.transformer import DecoderLM, TransformerConfig


def test_lora_zero_init_is_base_and_shapes():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = lora.LoRALinear(base, rank=2, alpha=4)
    assert layer.A.shape == (2, 6) and layer.B.shape == (4, 2) and layer.scaling == 2.0
    x = torch.randn(3, 5, 6)
    assert layer(x).shape == (3, 5, 4)
    torch.testing.assert_close(layer(x), base(x))
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A", "B"]


def test_lora_forward_equals_merged():
    torch.manual_seed(1)
    layer = lora.LoRALinear(nn.Linear(6, 4), rank=3, alpha=1.5)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(7, 6)
    w = layer.base.weight + 0.5 * layer.B @ layer.A
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias)
    torch.testing.assert_close(layer.merged()(x), layer(x), atol=1e-6, rtol=1e-5)


def test_lora_gradients_reach_only_adapters():
    torch.manual_seed(2)
    layer = lora.LoRALinear(nn.Linear(5, 5), rank=2)
    layer(torch.randn(4, 5)).sum().backward()
    assert layer.base.weight.grad is None
    assert layer.B.grad is not None and layer.B.grad.abs().sum() > 0
    assert torch.all(layer.A.grad == 0)            # B = 0 at the start: dL/dA = B^T (...) = 0


def test_inject_and_merge_in_transformer():
    torch.manual_seed(3)
    model = DecoderLM(TransformerConfig(d_model=16, n_heads=2, n_layers=2), vocab_size=9, max_len=8)
    ids = torch.randint(0, 9, (2, 8))
    before = model(ids)
    names = lora.inject_lora(model, ["attn.q", "attn.v"], rank=4)
    assert names == ["transformer.blocks.0.attn.q", "transformer.blocks.0.attn.v",
                     "transformer.blocks.1.attn.q", "transformer.blocks.1.attn.v"]
    torch.testing.assert_close(model(ids), before)
    lora.freeze_except(model, trainable=["head"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{f}" for n in names for f in "AB"} | {"head.weight"}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, lora.LoRALinear):
                m.B.normal_()
    adapted = model(ids)
    lora.merge_lora(model)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(ids), adapted, atol=1e-5, rtol=1e-5)


def test_svd_full_rank_reproduces_layer_and_truncation_is_optimal():
    torch.manual_seed(4)
    layer = nn.Linear(8, 5)
    x = torch.randn(10, 8)
    full = lora.low_rank_linear(layer, 5)
    torch.testing.assert_close(full(x), layer(x), atol=1e-5, rtol=1e-5)
    s = torch.linalg.svdvals(layer.weight.detach())
    for r in range(1, 5):
        err = torch.linalg.matrix_norm(layer.weight - lora.low_rank_linear(layer, r).weight(), ord=2)
        torch.testing.assert_close(err, s[r], atol=1e-5, rtol=1e-4)   # Eckart-Young
    assert sum(p.numel() for p in lora.low_rank_linear(layer, 2).parameters()) == 2 * (8 + 5) + 5


@pytest.mark.parametrize("rank", [0, -1, 6])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match=r"rank must lie in 1\.\.min\(d_in, d_out\) = 1\.\.5"):
        lora.LoRALinear(nn.Linear(8, 5), rank)
    with pytest.raises(ValueError, match=r"rank must lie in 1\.\.min\(d_in, d_out\) = 1\.\.5"):
        lora.low_rank_linear(nn.Linear(8, 5), rank)


def test_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        lora.LoRALinear(nn.Conv1d(2, 2, 1), 1)
    with pytest.raises(TypeError):
        lora.LoRALinear(nn.Linear(4, 4), 2.0)
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        lora.inject_lora(nn.Sequential(nn.Linear(2, 2)), ["fc9"], 1)
    with pytest.raises(ValueError, match="no LoRALinear"):
        lora.merge_lora(nn.Sequential(nn.Linear(2, 2)))
    assert lora.lora_parameters(100, 50, 4) == 600
