"""Tests of dlbook.transformer_training: windows, sliding-window NLL, patches, ViT, grad norms."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import transformer as tf
from dlbook import transformer_training as tt


def test_random_windows_are_shifted_by_one():
    ids = torch.arange(100)
    x, y = tt.random_windows(ids, 5, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 10)
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)
    with pytest.raises(ValueError, match="too short"):
        tt.random_windows(torch.arange(5), 2, 5)
    with pytest.raises(ValueError, match="1-D"):
        tt.random_windows(torch.zeros(2, 5, dtype=torch.long), 2, 3)


class Bigram(nn.Module):
    """Logits depend on the current token only: the NLL is then independent of the windows."""

    def __init__(self, v):
        super().__init__()
        self.table = nn.Embedding(v, v)

    def forward(self, ids):
        return self.table(ids)


@pytest.mark.parametrize("stride", [1, 3, 8])
def test_lm_nll_scores_every_target_once(stride):
    torch.manual_seed(0)
    model = Bigram(7)
    ids = torch.randint(0, 7, (60,))
    got = tt.lm_nll(model, ids, n=8, stride=stride, batch_size=4)
    starts = list(range(0, len(ids) - 8, stride))
    last = starts[-1] + 8                      # the last target covered
    ref = F.cross_entropy(model(ids[:last]), ids[1:last + 1]).item()
    assert math.isclose(got, ref, rel_tol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        tt.lm_nll(model, ids, n=8, stride=9)


def test_lm_nll_of_uniform_model_is_log_v():
    lm = tf.DecoderLM(tf.TransformerConfig(d_model=8, n_heads=2, n_layers=1), vocab_size=5, max_len=6)
    with torch.no_grad():
        lm.head.weight.zero_()
    assert lm.training
    assert math.isclose(tt.lm_nll(lm, torch.randint(0, 5, (40,)), n=6), math.log(5), rel_tol=1e-6)
    assert lm.training


def test_patchify_order_and_errors():
    img = torch.arange(16.).reshape(1, 4, 4)
    p = tt.patchify(img, 2)
    assert p.shape == (1, 4, 4)
    assert p[0, 0].tolist() == [0, 1, 4, 5] and p[0, 1].tolist() == [2, 3, 6, 7]
    assert p[0, 3].tolist() == [10, 11, 14, 15]
    ref = F.unfold(img[:, None], 2, stride=2).transpose(1, 2)
    torch.testing.assert_close(p, ref)
    with pytest.raises(ValueError, match="divide"):
        tt.patchify(img, 3)
    with pytest.raises(ValueError, match="B, H, W"):
        tt.patchify(img[0], 2)


def test_patch_classifier_shapes_gradients_and_errors():
    torch.manual_seed(1)
    cfg = tf.TransformerConfig(d_model=16, n_heads=2, n_layers=2)
    model = tt.PatchClassifier(cfg, image_size=28, patch=7)
    out = model(torch.rand(3, 28, 28))
    assert out.shape == (3, 10) and model.tokens(torch.rand(3, 28, 28)).shape == (3, 16, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    norms = tt.block_grad_norms(model.transformer)
    assert len(norms) == 2 and all(v > 0 for v in norms)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.rand(3, 27, 27))
    with pytest.raises(ValueError, match="divide"):
        tt.PatchClassifier(cfg, image_size=28, patch=5)
    with pytest.raises(TypeError, match="Transformer"):
        tt.block_grad_norms(model)
    with pytest.raises(ValueError, match="backward"):
        tt.block_grad_norms(tf.Transformer(cfg))


@pytest.mark.parametrize("norm_first", [False, True])
def test_block_from_torch_matches_encoder_layer(norm_first):
    torch.manual_seed(3)
    ref = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    with torch.no_grad():
        ref.norm1.weight.normal_(); ref.norm2.bias.normal_()
    block = tt.block_from_torch(ref).eval()
    assert block.pre == norm_first
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="norm_first"):
        tt.block_from_torch(ref, norm_position="post" if norm_first else "pre")
    with pytest.raises(TypeError):
        tt.block_from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ReLU"):
        tt.block_from_torch(nn.TransformerEncoderLayer(16, 4, 24, activation="gelu", batch_first=True))


def test_lm_loss_flattens_and_ignores_missing_targets():
    torch.manual_seed(0)
    logits, y = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    torch.testing.assert_close(tt.lm_loss(logits, y), F.cross_entropy(logits.reshape(10, 7), y.reshape(10)))
    y_missing = y.clone()
    y_missing[:, :2] = -100
    torch.testing.assert_close(tt.lm_loss(logits, y_missing),
                               F.cross_entropy(logits[:, 2:].reshape(6, 7), y[:, 2:].reshape(6)))
    with pytest.raises(ValueError, match="expected logits"):
        tt.lm_loss(logits, y[:, :4])


def test_train_lm_matches_a_hand_written_loop_and_clips():
    ids = torch.arange(400) % 11
    cfg = tf.TransformerConfig(d_model=16, n_heads=2, n_layers=1)

    def fresh():
        torch.manual_seed(0)
        model = tf.DecoderLM(cfg, vocab_size=11, max_len=8)
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    model, opt = fresh()
    seen = []
    log = tt.train_lm(model, ids, opt, 5, batch_size=4, context=8, clip=0.5,
                      generator=torch.Generator().manual_seed(1), progress=False,
                      after_backward=lambda m: seen.append(m.head.weight.grad is not None),
                      after_step=seen.append)
    assert seen == [True, 1, True, 2, True, 3, True, 4, True, 5]
    ref, ref_opt = fresh()
    gen, ref_losses = torch.Generator().manual_seed(1), []
    for _ in range(5):
        x, y = tt.random_windows(ids, 4, 8, gen)
        loss = F.cross_entropy(ref(x).flatten(0, 1), y.flatten())
        ref_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
        ref_losses.append(loss.item())
    assert log["loss"] == pytest.approx(ref_losses, rel=1e-5)
    assert len(log["grad_norm"]) == 5 and log["loss"][-1] < log["loss"][0]
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        tt.train_lm(model, ids, opt, 0, batch_size=4, context=8)
