"""Tests of dlbook.icl: the linear-regression prompts, the model's causality, least squares."""
import pytest
import torch

from dlbook import icl
from dlbook.transformer import TransformerConfig


def test_sampler_shapes_and_relation():
    g = torch.Generator().manual_seed(0)
    xs, ys, w = icl.sample_linear_prompts(4, 7, 3, generator=g)
    assert xs.shape == (4, 7, 3) and ys.shape == (4, 7) and w.shape == (4, 3)
    torch.testing.assert_close(ys, torch.einsum("bnd,bd->bn", xs, w))
    with pytest.raises(ValueError):
        icl.sample_linear_prompts(0, 7, 3)
    with pytest.raises(ValueError):
        icl.sample_linear_prompts(2, 7, 3, noise=-1.0)


def test_interleave():
    xs, ys = torch.arange(6.).reshape(1, 3, 2), torch.tensor([[10., 11., 12.]])
    t = icl.interleave(xs, ys)
    assert t.shape == (1, 6, 3)
    torch.testing.assert_close(t[0, 2], torch.tensor([2., 3., 0.]))
    torch.testing.assert_close(t[0, 3], torch.tensor([0., 0., 11.]))
    with pytest.raises(ValueError):
        icl.interleave(xs, ys[:, :2])


def test_pairs_mask():
    m = icl.pairs_mask(3)
    assert m.shape == (6, 6)
    assert m[3].tolist() == [False, False, False, True, False, False]      # query 0: itself only
    assert m[5].tolist() == [True, True, False, False, False, True]        # query 2: pairs 0, 1
    assert m[1].tolist() == [True, True, False, False, False, False]       # pair 1: pairs 0, 1


@pytest.mark.parametrize("layout", ["interleaved", "pairs"])
def test_model_is_causal_and_shapes(layout):
    torch.manual_seed(1)
    cfg = TransformerConfig(d_model=16, n_heads=2, n_layers=2)
    model = icl.InContextRegressor(3, 6, cfg, layout=layout).eval()
    xs, ys, _ = icl.sample_linear_prompts(2, 5, 3)
    out = model(xs, ys)
    assert out.shape == (2, 5)
    ys2 = ys.clone()
    ys2[:, 2] += 5.0                       # y_2 may change predictions 3.. only
    out2 = model(xs, ys2)
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3:], out2[:, 3:])
    with pytest.raises(ValueError, match="max_points"):
        model(*icl.sample_linear_prompts(1, 7, 3)[:2])
    with pytest.raises(ValueError, match="dimension"):
        model(*icl.sample_linear_prompts(1, 3, 4)[:2])
    with pytest.raises(ValueError, match="layout"):
        icl.InContextRegressor(3, 6, cfg, layout="mixed")


def test_least_squares_exact_after_d_points():
    g = torch.Generator().manual_seed(2)
    xs, ys, w = icl.sample_linear_prompts(5, 8, 3, generator=g)
    pred = icl.least_squares_predictions(xs, ys)
    assert pred.shape == (5, 8)
    assert torch.all(pred[:, 0] == 0)
    torch.testing.assert_close(pred[:, 3:], ys[:, 3:], atol=1e-4, rtol=1e-4)
    # one point: the minimum-norm solution is w_hat = y_0 x_0 / |x_0|^2
    w1 = ys[:, 0, None] * xs[:, 0] / (xs[:, 0] ** 2).sum(-1, keepdim=True)
    torch.testing.assert_close(pred[:, 1], (xs[:, 1] * w1).sum(-1), atol=1e-5, rtol=1e-5)
