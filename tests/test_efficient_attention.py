"""Tests of dlbook.efficient_attention: sparse masks, sliding windows, Performer, Linformer."""
import pytest
import torch
import torch.nn.functional as F

from dlbook import efficient_attention as ea
from dlbook.attention import attention


def test_sliding_window_mask_structure():
    m = ea.sliding_window_mask(10, 2)
    assert m.shape == (10, 10) and m.dtype == torch.bool
    assert torch.equal(m, m.T)
    assert m.sum(1).tolist() == [3, 4, 5, 5, 5, 5, 5, 5, 4, 3]
    c = ea.sliding_window_mask(10, 2, causal=True)
    assert torch.equal(c, m & torch.ones(10, 10, dtype=torch.bool).tril())
    with pytest.raises(ValueError):
        ea.sliding_window_mask(10, -1)


def test_bigbird_mask_structure():
    g = torch.Generator().manual_seed(0)
    m = ea.bigbird_mask(32, window=2, n_global=2, n_random=3, generator=g)
    assert m[:2].all() and m[:, :2].all()                         # global rows and columns
    assert (m & ea.sliding_window_mask(32, 2)).sum() == ea.sliding_window_mask(32, 2).sum()
    extra = m & ~ea.sliding_window_mask(32, 2)
    extra[:, :2] = False
    assert (extra[2:].sum(1) <= 3).all()                          # at most n_random extra keys
    assert m.sum() < 32 * 32
    with pytest.raises(ValueError, match="exceed"):
        ea.bigbird_mask(4, 1, 5, 0)


@pytest.mark.parametrize("window", [0, 1, 3, 20])
def test_sliding_window_attention_equals_masked_attention(window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=torch.float64) for _ in range(3))
    ref, _ = attention(q, k, v, mask=ea.sliding_window_mask(17, window))
    torch.testing.assert_close(ea.sliding_window_attention(q, k, v, window), ref)


def test_sliding_window_attention_gradients():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: ea.sliding_window_attention(a, b, c, 2), (q, k, v))


def test_random_features_orthogonal_blocks():
    g = torch.Generator().manual_seed(0)
    w = ea.random_features(20, 8, generator=g, dtype=torch.float64)
    assert w.shape == (20, 8)
    blk = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(blk @ blk.T, torch.eye(8, dtype=torch.float64))
    with pytest.raises(ValueError):
        ea.random_features(0, 8)


def test_favor_kernel_is_unbiased():
    torch.manual_seed(2)
    q, k = torch.randn(5, 4, dtype=torch.float64) * 0.5, torch.randn(6, 4, dtype=torch.float64) * 0.5
    exact = torch.exp(q @ k.T / 2.0)
    g = torch.Generator().manual_seed(1)
    w = ea.random_features(200_000, 4, orthogonal=False, generator=g, dtype=torch.float64)
    est = ea.favor_kernel(q, k, w)
    torch.testing.assert_close(est, exact, rtol=0.02, atol=0.0)


def test_performer_error_shrinks_with_features():
    torch.manual_seed(3)
    q, k = (torch.randn(64, 16, dtype=torch.float64) * 0.3 for _ in range(2))
    v = torch.randn(64, 16, dtype=torch.float64)
    exact, _ = attention(q, k, v)
    errs = []
    for m in (8, 64, 1024):
        e = []
        for s in range(3):
            w = ea.random_features(m, 16, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            e.append((ea.performer_attention(q, k, v, w) - exact).norm() / exact.norm())
        errs.append(float(torch.stack(e).mean()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.06


def test_performer_stabilisation_does_not_change_result():
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 10, 8, dtype=torch.float64) for _ in range(3))
    w = ea.random_features(32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = 8 ** -0.25
    fq, fk = ea.favor_features(q * s, w), ea.favor_features(k * s, w)
    plain = (fq @ (fk.transpose(-2, -1) @ v)) / (fq @ fk.sum(-2).unsqueeze(-1))
    torch.testing.assert_close(ea.performer_attention(q, k, v, w), plain)
    with pytest.raises(ValueError, match="stabilise"):
        ea.favor_features(q, w, stabilise="max")
    with pytest.raises(ValueError, match="shape"):
        ea.favor_features(q, torch.randn(4, 7))


def test_linformer_identity_projection_is_exact_and_shapes():
    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 12, 8) for _ in range(3))
    eye = torch.eye(12)
    torch.testing.assert_close(ea.linformer_attention(q, k, v, eye), F.scaled_dot_product_attention(q, k, v))
    e = ea.linformer_projection(4, 12, generator=torch.Generator().manual_seed(0))
    assert e.shape == (4, 12)
    assert ea.linformer_attention(q, k, v, e).shape == (2, 12, 8)
    with pytest.raises(ValueError, match="k_proj"):
        ea.linformer_attention(q, k, v, torch.randn(4, 11))


def test_pooling_projection():
    p = ea.pooling_projection(2, 6)
    torch.testing.assert_close(p, torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]) / 3.0)
    torch.testing.assert_close(ea.pooling_projection(5, 5), torch.eye(5))
    with pytest.raises(ValueError, match="divisor"):
        ea.pooling_projection(4, 6)
