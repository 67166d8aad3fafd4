import pytest
import torch
from torch import nn

from dlbook import mlp, training


def blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) + 3.0 * y[:, None].float()
    return x, y


def test_fit_learns_and_records_history():
    torch.manual_seed(0)
    x, y = blobs()
    net = mlp.MLP(mlp.MLPConfig((2, 8, 2)))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    hist = training.fit(net, training.batches(x, y, 32, shuffle=True), mlp.cross_entropy, opt, 15,
                        val=training.batches(x, y, 100), metrics={"accuracy": training.accuracy},
                        progress=False)
    assert hist.epochs == 15
    assert set(hist.values) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist.last("val_accuracy") > 0.95
    with pytest.raises(KeyError, match="no 'test_loss'"):
        hist["test_loss"]


def test_fit_bad_input():
    net = nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = blobs(10)
    loader = training.batches(x, y, 5)
    with pytest.raises(ValueError, match="epochs"):
        training.fit(net, loader, mlp.cross_entropy, opt, 0, progress=False)
    with pytest.raises(TypeError, match="not callable"):
        training.fit(net, loader, mlp.cross_entropy, opt, 1, metrics={"acc": 3}, progress=False)
    with pytest.raises(ValueError, match="'loss' is recorded"):
        training.fit(net, loader, mlp.cross_entropy, opt, 1, metrics={"loss": training.accuracy}, progress=False)
    with pytest.raises(ValueError, match="empty training set"):
        training.fit(net, [], mlp.cross_entropy, opt, 1, progress=False)
    with pytest.raises(ValueError, match="rows"):
        training.batches(x, y[:3], 4)
    with pytest.raises(ValueError, match="batch_size"):
        training.batches(x, y, 0)


def test_evaluate_restores_mode_and_weights_by_batch_size():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    net.train()
    x, y = blobs(7)
    res = training.evaluate(net, training.batches(x, y, 3), mlp.cross_entropy, {"accuracy": training.accuracy})
    assert net.training
    with torch.no_grad():
        net.eval()
        out = net(x)
    assert res["loss"] == pytest.approx(mlp.cross_entropy(out, y).item(), rel=1e-6)
    assert res["accuracy"] == pytest.approx(training.accuracy(out, y))
    with pytest.raises(ValueError, match="no batches"):
        training.evaluate(net, [], mlp.cross_entropy)


def test_accuracy_and_confusion():
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    assert training.accuracy(out, y) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        training.accuracy(out[0], y)
    m = training.confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        training.confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="equal-length"):
        training.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def test_predict():
    net = nn.Linear(2, 2)
    x, y = blobs(9)
    preds, targets = training.predict(net, training.batches(x, y, 4))
    assert preds.shape == (9,) and torch.equal(targets, y)
    assert torch.equal(preds, net(x).argmax(1))
