import pytest
import torch
from torch import nn

from dlbook import rnn


def _x(B=3, T=7, D=4):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_elman_matches_torch_outputs_and_gradients():
    torch.manual_seed(0)
    ref = nn.RNN(4, 5, batch_first=True).double()
    x = _x()
    w = rnn.torch_weights(ref)
    H = rnn.elman_rnn(x, w["W_x"], w["W_h"], w["b"])
    assert H.shape == (3, 7, 5)
    out, _ = ref(x)
    torch.testing.assert_close(H, out)
    g1 = torch.autograd.grad(H.square().sum(), ref.weight_hh_l0)[0]
    g2 = torch.autograd.grad(ref(x)[0].square().sum(), ref.weight_hh_l0)[0]
    torch.testing.assert_close(g1, g2)


def test_lstm_and_gru_match_torch():
    torch.manual_seed(0)
    x = _x()
    ref = nn.LSTM(4, 5, batch_first=True).double()
    w = rnn.torch_weights(ref)
    h0, c0 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    H, (h, c) = rnn.lstm(x, w["W_x"], w["W_h"], w["b"], h0, c0)
    out, (hr, cr) = ref(x, (h0[None], c0[None]))
    torch.testing.assert_close(H, out)
    torch.testing.assert_close(c, cr[0])
    g = nn.GRU(4, 5, batch_first=True).double()
    w = rnn.torch_weights(g)
    H = rnn.gru(x, w["W_x"], w["W_h"], w["b_x"], w["b_h"], h0)
    torch.testing.assert_close(H, g(x, h0[None])[0])


def test_power_norms_orthogonal_and_scaled():
    Q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    torch.testing.assert_close(rnn.power_norms(Q, 5), torch.ones(6, dtype=torch.float64))
    n = rnn.power_norms(0.5 * Q, 3)
    torch.testing.assert_close(n, torch.tensor([1, .5, .25, .125], dtype=torch.float64))


def test_adding_problem_and_text_helpers():
    x, y = rnn.adding_problem(10, 20, torch.Generator().manual_seed(0))
    assert x.shape == (10, 20, 2) and y.shape == (10,)
    assert torch.all(x[..., 1].sum(1) == 2)
    torch.testing.assert_close((x[..., 0] * x[..., 1]).sum(1), y)
    v = rnn.CharVocab("hello world")
    assert v.decode(v.encode("low")) == "low"
    rows = rnn.batchify(torch.arange(23), 2)
    assert rows.shape == (2, 11)
    wins = list(rnn.tbptt_windows(rows, 4))
    assert [w[0].shape[1] for w in wins] == [4, 4, 2]
    assert torch.equal(wins[0][1], rows[:, 1:5])


def test_char_lstm_weight_drop_trains():
    torch.manual_seed(0)
    m = rnn.CharLSTM(10, embed=4, hidden=8, dropout=0.2, weight_drop=0.5)
    ids = torch.randint(0, 10, (2, 6))
    logits, (h, c) = m(ids)
    assert logits.shape == (2, 6, 10) and h.shape == (1, 2, 8)
    logits.sum().backward()
    assert m.lstm.weight_hh_l0.grad is not None and m.lstm.weight_hh_l0.grad.abs().sum() > 0
    m.eval()
    a, _ = m(ids)
    b, _ = m(ids)
    torch.testing.assert_close(a, b)


def test_bad_input():
    W = torch.zeros(4, 5)
    with pytest.raises(ValueError):
        rnn.elman_rnn(torch.zeros(3, 4), W, torch.zeros(5, 5), torch.zeros(5))
    with pytest.raises(ValueError):
        rnn.lstm(torch.zeros(1, 2, 4), W, torch.zeros(5, 5), torch.zeros(5))
    with pytest.raises(TypeError):
        rnn.elman_rnn([[1.0]], W, torch.zeros(5, 5), torch.zeros(5))
    with pytest.raises(TypeError):
        rnn.torch_weights(nn.Linear(2, 2))
    with pytest.raises(ValueError):
        rnn.power_norms(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError):
        rnn.CharVocab("ab").encode("abc")
    with pytest.raises(ValueError):
        rnn.LockedDropout(1.0)
