"""Tests of dlbook.positional: learned/sinusoidal/relative/ALiBi/rotary positions."""
import math

import pytest
import torch

from dlbook import positional as pos
from dlbook.attention import MultiHeadAttention
from dlbook.embeddings import sinusoidal_encoding
from dlbook.transformer import TransformerConfig


def test_rotary_scores_depend_only_on_offset():
    torch.manual_seed(0)
    d, n = 16, 12
    q0, k0 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    q = q0.expand(n, d)
    k = k0.expand(n, d)
    rq, rk = pos.RotaryEmbedding()(q[None, None], k[None, None])
    s = (rq @ rk.transpose(-2, -1))[0, 0]                     # s[m, p] for the same q, k
    for off in range(-n + 1, n):
        diag = torch.diagonal(s, offset=off)
        torch.testing.assert_close(diag, diag[0].expand_as(diag))


def test_rotary_is_a_rotation_matching_the_sinusoid_angles():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    p = torch.arange(7)
    y = pos.apply_rotary(x, p)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))          # norm preserved
    torch.testing.assert_close(pos.apply_rotary(x, torch.zeros(7, dtype=torch.long)), x)
    # the rotated unit vector e_0 at position p is (cos p w_t, sin p w_t) in the pair 0
    e = torch.zeros(7, 8, dtype=torch.float64); e[:, 0] = 1
    pe = sinusoidal_encoding(7, 8)
    torch.testing.assert_close(pos.apply_rotary(e, p)[:, :2], pe[:, [1, 0]])


def test_rotary_bad_input():
    with pytest.raises(ValueError, match="even"):
        pos.apply_rotary(torch.randn(4, 5), torch.arange(4))
    with pytest.raises(ValueError, match="positions"):
        pos.apply_rotary(torch.randn(4, 6), torch.arange(3))
    with pytest.raises(ValueError, match="self-attention"):
        pos.RotaryEmbedding()(torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4))


def test_rope_hook_in_multihead_attention_is_shift_invariant():
    torch.manual_seed(2)
    mha = MultiHeadAttention(16, 2).eval()
    mha.rope = pos.RotaryEmbedding()
    mha.keep_weights = True
    x = torch.randn(1, 6, 16)
    mha(x)
    w1 = mha.weights
    # prepending tokens shifts absolute positions but not the offsets between the last 6;
    # with a mask hiding the prefix the weights among the last 6 tokens are unchanged
    xx = torch.cat([torch.randn(1, 3, 16), x], dim=1)
    mask = torch.zeros(9, 9, dtype=torch.bool); mask[3:, 3:] = True; mask[:3, :3] = True
    mha(xx, mask=mask)
    torch.testing.assert_close(mha.weights[..., 3:, 3:], w1)


def test_relative_bias_structure():
    rel = pos.RelativePositionBias(n_heads=3, max_distance=2)
    with torch.no_grad():
        rel.table.copy_(torch.arange(15.).reshape(3, 5))
    b = rel(6)
    assert b.shape == (3, 6, 6)
    off = torch.arange(6)[None, :] - torch.arange(6)[:, None]
    torch.testing.assert_close(b[1], 5 + off.clamp(-2, 2).float() + 2)
    assert rel(4, 7).shape == (3, 4, 7)


def test_alibi():
    s = pos.alibi_slopes(8)
    torch.testing.assert_close(s, torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    b = pos.alibi_bias(8, 5)
    assert b.shape == (8, 5, 5)
    torch.testing.assert_close(b[0, 4, 1], torch.tensor(-0.5 * 3))
    with pytest.raises(ValueError):
        pos.alibi_slopes(0)


def test_learned_positions_clamp_and_error():
    lp = pos.LearnedPositions(4, 8)
    with pytest.raises(ValueError, match="exceeds"):
        lp(5)
    lp.clamp = True
    p = lp(6)
    torch.testing.assert_close(p[4], p[3])
    torch.testing.assert_close(p[5], p[3])


@pytest.mark.parametrize("method", pos.METHODS)
def test_positional_lm_shapes_and_causality(method):
    torch.manual_seed(3)
    cfg = TransformerConfig(d_model=16, n_heads=2, n_layers=1)
    model = pos.PositionalLM(cfg, vocab_size=10, max_len=8, method=method).eval()
    ids = torch.randint(0, 10, (2, 12))                   # longer than max_len: all methods run
    out = model(ids)
    assert out.shape == (2, 12, 10)
    ids2 = ids.clone(); ids2[:, -1] = (ids2[:, -1] + 1) % 10
    torch.testing.assert_close(model(ids2)[:, :-1], out[:, :-1])   # the future is hidden


def test_positional_lm_bad_input():
    cfg = TransformerConfig(d_model=16, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="method"):
        pos.PositionalLM(cfg, 10, 8, "absolute")
    model = pos.PositionalLM(cfg, 10, 8, "rope")
    with pytest.raises(ValueError, match="0..9"):
        model(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="shape"):
        model(torch.tensor([1, 2]))
