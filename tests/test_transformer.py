"""Tests of dlbook.transformer: LayerNorm (4.16), blocks of Table 2, the two models."""
import pytest
import torch
from torch import nn

from dlbook import transformer as tf
from dlbook.attention import MultiHeadAttention


def test_layer_norm_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 3 + 1
    ours, ref = tf.LayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    with pytest.raises(ValueError, match="gamma"):
        tf.layer_norm(x, torch.ones(15), torch.zeros(16))


@pytest.mark.parametrize("position", ["pre", "post"])
def test_block_equations(position):
    torch.manual_seed(1)
    cfg = tf.TransformerConfig(d_model=16, n_heads=2, norm_position=position)
    block = tf.Block(cfg).eval()
    x = torch.randn(2, 6, 16)
    if position == "pre":
        y = x + block.attn(block.norm1(x))
        ref = y + block.mlp(block.norm2(y))
    else:
        y = block.norm1(x + block.attn(x))
        ref = block.norm2(y + block.mlp(y))
    torch.testing.assert_close(block(x), ref)


def test_post_ln_block_matches_torch_encoder_layer():
    torch.manual_seed(2)
    cfg = tf.TransformerConfig(d_model=16, n_heads=4, d_mlp=32, norm_position="post")
    ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    ours = tf.Block(cfg).eval()
    ours.attn = MultiHeadAttention.from_torch(ref.self_attn)
    with torch.no_grad():
        ours.mlp.up.weight.copy_(ref.linear1.weight); ours.mlp.up.bias.copy_(ref.linear1.bias)
        ours.mlp.down.weight.copy_(ref.linear2.weight); ours.mlp.down.bias.copy_(ref.linear2.bias)
        ours.norm1.load_state_dict(ref.norm1.state_dict()); ours.norm2.load_state_dict(ref.norm2.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["layer", "dyt", "batch", "none"])
def test_decoder_is_causal(norm):
    torch.manual_seed(3)
    cfg = tf.TransformerConfig(d_model=16, n_heads=2, n_layers=2, norm=norm)
    lm = tf.DecoderLM(cfg, vocab_size=11, max_len=8).eval()
    ids = torch.randint(0, 11, (2, 8))
    out = lm(ids)
    assert out.shape == (2, 8, 11)
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    torch.testing.assert_close(lm(changed)[:, :5], out[:, :5])
    assert not torch.allclose(lm(changed)[:, 5:], out[:, 5:])


def test_generate_and_attention_maps():
    torch.manual_seed(4)
    cfg = tf.TransformerConfig(d_model=16, n_heads=2, n_layers=3, fast=True)
    lm = tf.DecoderLM(cfg, vocab_size=7, max_len=6, positions="sinusoidal")
    out = lm.generate(torch.zeros(2, 1, dtype=torch.long), 9, top_k=3)
    assert out.shape == (2, 10) and lm.training
    maps = tf.attention_maps(lm, torch.randint(0, 7, (1, 6)))
    assert len(maps) == 3 and maps[0].shape == (1, 2, 6, 6)
    assert torch.all(maps[0][0, 0].triu(1) == 0)
    assert all(m.weights is None and not m.keep_weights for m in lm.modules()
               if isinstance(m, MultiHeadAttention))


def test_encoder_ignores_padding():
    torch.manual_seed(5)
    cfg = tf.TransformerConfig(d_model=16, n_heads=2)
    clf = tf.EncoderClassifier(cfg, vocab_size=9, max_len=10, n_classes=3).eval()
    ids = torch.randint(1, 9, (2, 10))
    lengths = torch.tensor([10, 4])
    out = clf(ids, lengths)
    noisy = ids.clone()
    noisy[1, 4:] = 0
    torch.testing.assert_close(clf(noisy, lengths), out)
    torch.testing.assert_close(clf(ids[1:, :4])[0], out[1])
    out.sum().backward()
    assert all(p.grad is not None for p in clf.parameters())


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="norm must"):
        tf.TransformerConfig(norm="rms")
    with pytest.raises(ValueError, match="divisible"):
        tf.TransformerConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="norm_position"):
        tf.TransformerConfig(norm_position="middle")
    lm = tf.DecoderLM(tf.TransformerConfig(d_model=8, n_heads=2), vocab_size=5, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        lm(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        lm(torch.full((1, 3), 5))
