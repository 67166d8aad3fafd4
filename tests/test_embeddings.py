"""Tests of dlbook.embeddings."""
import math

import pytest
import torch
from torch import nn

from dlbook import embeddings as E


def test_one_hot_lookup_equals_embedding():
    torch.manual_seed(0)
    emb = nn.Embedding(11, 4)
    ids = torch.tensor([[0, 3, 10], [5, 5, 1]])
    out = E.embed_one_hot(ids, emb.weight)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out, emb(ids))
    out.sum().backward()  # the gradient reaches the rows used, with multiplicity
    assert emb.weight.grad[5, 0] == 2 and emb.weight.grad[2, 0] == 0


def test_sinusoidal_values_and_shift():
    pe = E.sinusoidal_encoding(50, 8)
    assert pe.shape == (50, 8)
    assert pe[0, 0] == 0 and pe[0, 1] == 1
    assert math.isclose(pe[3, 2], math.sin(3 / 10000 ** (2 / 8)))
    for k in [1, 5, 17]:
        M = E.shift_matrix(k, 8)
        torch.testing.assert_close(pe[k:] , pe[:-k] @ M.T, atol=1e-12, rtol=0)
        torch.testing.assert_close(M @ M.T, torch.eye(8, dtype=torch.float64))


def test_vocabulary_and_pairs():
    voc = E.Vocabulary("a b a c a b d".split(), min_count=2)
    assert voc.itos == ["a", "b", "<unk>"]
    assert voc.encode(["a", "d"]).tolist() == [0, 2]
    assert voc.counts.tolist() == [3, 2, 2]
    c, o = E.skipgram_pairs(torch.arange(5), 2)
    assert len(c) == 2 * (4 + 3)
    assert set(zip(c.tolist(), o.tolist())) >= {(0, 1), (1, 0), (0, 2), (4, 2)}


def test_skipgram_loss_and_gradient():
    torch.manual_seed(0)
    m = E.SkipGram(20, 6)
    nn.init.normal_(m.out.weight)
    loss_fn = E.NegativeSamplingLoss(m, E.noise_distribution(torch.ones(20)), k=3)
    v = m(torch.tensor([1, 2]))
    loss = loss_fn(v, torch.tensor([3, 4]))
    assert loss.dim() == 0 and loss > 0
    loss.backward()
    assert m.inp.weight.grad[1].abs().sum() > 0 and m.inp.weight.grad[0].abs().sum() == 0


def test_nearest_neighbours():
    w = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [-1, 0]])
    nn_ = E.nearest_neighbours(w, 0, 2)
    assert [i for i, _ in nn_] == [1, 2]
    assert nn_[0][1] == pytest.approx(0.9 / math.hypot(0.9, 0.1))


def test_bad_input():
    with pytest.raises(ValueError):
        E.one_hot(torch.tensor([5]), 5)
    with pytest.raises(TypeError):
        E.one_hot(torch.tensor([0.5]), 5)
    with pytest.raises(ValueError):
        E.sinusoidal_encoding(10, 7)
    with pytest.raises(ValueError):
        E.embed_one_hot(torch.tensor([0]), torch.zeros(3))
    with pytest.raises(ValueError):
        E.skipgram_pairs(torch.arange(3), 0)
    with pytest.raises(ValueError):
        E.nearest_neighbours(torch.zeros(3, 2), 3)
