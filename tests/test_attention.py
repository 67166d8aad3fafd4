"""Tests of dlbook.attention: Algorithms 2-3, the sum form, masks, nn.MultiheadAttention."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import attention as att


@pytest.fixture(autouse=True)
def _dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def weights(h=4, d_model=16, d_head=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(h, d_model, d_head, generator=g) / d_model ** 0.5 for _ in range(3)]
    return (*w, torch.randn(h * d_head, d_model, generator=g) / d_model ** 0.5)


def test_single_head_matches_formula_and_rows_sum_to_one():
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    wq, wk, wv = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 6)
    a, p = att.single_head(x, wq, wk, wv)
    s = (x @ wq) @ (x @ wk).T / 3 ** 0.5
    torch.testing.assert_close(a, torch.softmax(s, -1) @ (x @ wv))
    assert a.shape == (5, 6) and p.shape == (5, 5)
    torch.testing.assert_close(p.sum(-1), torch.ones(5))


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_forms_agree_with_torch(masked):
    torch.manual_seed(1)
    x = torch.randn(2, 7, 16)
    wq, wk, wv, wo = weights()
    mask = att.causal_mask(7) if masked else None
    a, p = att.multi_head(x, wq, wk, wv, wo, mask=mask)
    torch.testing.assert_close(att.multi_head_sum_form(x, wq, wk, wv, wo, mask=mask), a)
    mha = nn.MultiheadAttention(16, 4, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w.permute(0, 2, 1).reshape(16, 16) for w in (wq, wk, wv)]))
        mha.out_proj.weight.copy_(wo.T)
    ref, ref_p = mha(x, x, x, attn_mask=None if mask is None else ~mask, average_attn_weights=False)
    torch.testing.assert_close(a, ref)
    torch.testing.assert_close(p, ref_p)
    if masked:
        assert torch.all(p.triu(1) == 0)


@pytest.mark.parametrize("fast", [False, True])
def test_module_from_torch_with_padding(fast):
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(12, 3, batch_first=True)
    ours = att.MultiHeadAttention.from_torch(mha, fast=fast)
    x = torch.randn(3, 6, 12)
    lengths = torch.tensor([6, 4, 2])
    mask = att.padding_mask(lengths, 6)
    ref, _ = mha(x, x, x, key_padding_mask=~mask[:, 0, 0])
    torch.testing.assert_close(ours(x, mask=mask), ref)
    wq, wk, wv, wo = ours.head_weights()
    assert wq.shape == (3, 12, 4) and wo.shape == (12, 12)
    bias_free = att.MultiHeadAttention(12, 3, bias=False)
    a, _ = att.multi_head(x, *bias_free.head_weights())
    torch.testing.assert_close(bias_free(x), a)


def test_fast_path_equals_explicit_with_bias_and_mask():
    torch.manual_seed(3)
    slow = att.MultiHeadAttention(8, 2)
    fast = att.MultiHeadAttention(8, 2, fast=True)
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(2, 5, 8)
    bias = torch.randn(2, 5, 5)
    mask = att.causal_mask(5)
    torch.testing.assert_close(fast(x, mask=mask, bias=bias), slow(x, mask=mask, bias=bias))
    torch.testing.assert_close(F.scaled_dot_product_attention(x, x, x), att.attention(x, x, x)[0])


def test_keep_weights_and_gradients():
    torch.manual_seed(4)
    m = att.MultiHeadAttention(8, 2)
    m.keep_weights = True
    x = torch.randn(1, 4, 8, requires_grad=True)
    m(x).sum().backward()
    assert m.weights.shape == (1, 2, 4, 4)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in m.parameters())


def test_rope_hook_is_applied():
    m = att.MultiHeadAttention(8, 2)
    calls = []

    def hook(q, k):
        calls.append(q.shape)
        return q, k
    m.rope = hook
    m(torch.randn(2, 3, 8))
    assert calls == [torch.Size([2, 2, 3, 4])]


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        att.MultiHeadAttention(10, 3)
    wq, wk, wv, wo = weights()
    with pytest.raises(ValueError, match="W_O"):
        att.multi_head(torch.randn(3, 16), wq, wk, wv, wo[:-1])
    with pytest.raises(ValueError, match="same shape"):
        att.multi_head(torch.randn(3, 16), wq, wk[:, :, :3], wv, wo)
    with pytest.raises(ValueError, match="d_k"):
        att.attention(torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="every key masked"):
        att.attention(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4),
                      mask=torch.tensor([[True, False], [False, False]]))
    with pytest.raises(TypeError, match="boolean"):
        att.attention(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4), mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match="broadcast"):
        att.attention(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4),
                      mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="d_model=8"):
        att.MultiHeadAttention(8, 2)(torch.randn(1, 3, 6))
    with pytest.raises(ValueError, match="lengths"):
        att.padding_mask(torch.tensor([0, 3]), 3)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_equals_kernel_form(causal):
    torch.manual_seed(5)
    q, k, v = torch.randn(2, 6, 4), torch.randn(2, 6, 4), torch.randn(2, 6, 3)
    fq, fk = att.elu_feature_map(q), att.elu_feature_map(k)
    sim = fq @ fk.transpose(-2, -1)                  # the n x n kernel matrix, formed explicitly
    if causal:
        sim = sim * att.causal_mask(6)
    ref = (sim / sim.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(att.linear_attention(q, k, v, causal=causal), ref)
    with pytest.raises(ValueError, match="d_k"):
        att.linear_attention(q, k[..., :3], v)
