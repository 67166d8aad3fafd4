"""Tests of dlbook.graphs: adjacency, normalisation, aggregation, softmax, bad input."""
import pytest
import torch

from dlbook import graphs


def ring(n: int = 5) -> torch.Tensor:
    src = torch.arange(n)
    dst = (src + 1) % n
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)


def test_dense_adj_and_degree():
    ei = ring(5)
    a = graphs.to_dense_adj(ei, 5)
    assert torch.equal(a, a.T)
    assert torch.equal(a.sum(1), graphs.degree(ei[1], 5))
    assert a.sum() == 10


def test_normalized_adjacency_matches_pyg_and_sparse():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm
    from torch_geometric.utils import to_dense_adj as pyg_dense

    torch.manual_seed(0)
    ei = torch.randint(0, 12, (2, 40))
    ei = torch.cat([ei, ei.flip(0)], dim=1).unique(dim=1)
    ei = ei[:, ei[0] != ei[1]]
    dense = graphs.normalized_adjacency(ei, 12)
    ref_ei, ref_w = gcn_norm(ei, num_nodes=12, add_self_loops=True)
    ref = pyg_dense(ref_ei, edge_attr=ref_w, max_num_nodes=12)[0].T
    torch.testing.assert_close(dense, ref)
    sparse = graphs.normalized_adjacency(ei, 12, sparse=True)
    torch.testing.assert_close(sparse.to_dense(), dense)
    eig = torch.linalg.eigvalsh(dense.double())
    assert eig.max() <= 1 + 1e-6 and eig.min() > -1


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_against_loop(reduce):
    torch.manual_seed(1)
    ei = ring(6)
    x = torch.randn(6, 3)
    out = graphs.aggregate(x[ei[0]], ei[1], 6, reduce=reduce)
    for i in range(6):
        nb = x[ei[0][ei[1] == i]]
        ref = {"sum": nb.sum(0), "mean": nb.mean(0), "max": nb.max(0).values}[reduce]
        torch.testing.assert_close(out[i], ref)


def test_aggregate_gradient_and_isolated_node():
    ei = torch.tensor([[0, 1], [1, 0]])
    x = torch.randn(3, 2, requires_grad=True)
    out = graphs.aggregate(x[ei[0]], ei[1], 3, reduce="mean")
    assert torch.equal(out[2], torch.zeros(2))
    out.sum().backward()
    assert torch.equal(x.grad[2], torch.zeros(2))


def test_segment_softmax_sums_to_one():
    torch.manual_seed(2)
    ei = graphs.add_self_loops(ring(7), 7)
    s = torch.randn(ei.shape[1], 4) * 30
    a = graphs.segment_softmax(s, ei[1], 7)
    sums = torch.zeros(7, 4).index_add_(0, ei[1], a)
    torch.testing.assert_close(sums, torch.ones(7, 4))
    from torch_geometric.utils import softmax as pyg_softmax
    torch.testing.assert_close(a, pyg_softmax(s, ei[1], num_nodes=7))


def test_self_loops_once_per_node():
    ei = torch.tensor([[0, 0, 1], [0, 1, 0]])
    out = graphs.add_self_loops(ei, 3)
    loops = out[:, out[0] == out[1]]
    assert sorted(loops[0].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[0, 5], [1, 2]]), "node 5"),
    (torch.tensor([[0, -1], [1, 2]]), "node -1"),
    (torch.tensor([0, 1, 2]), "shape"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "integers"),
])
def test_bad_edge_index(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        graphs.normalized_adjacency(bad, 5)


def test_bad_reduce():
    with pytest.raises(ValueError, match="reduce"):
        graphs.aggregate(torch.ones(2, 1), torch.tensor([0, 1]), 2, reduce="median")


def test_fit_nodes_learns_separable_labels():
    from types import SimpleNamespace

    torch.manual_seed(0)
    n = 40
    y = torch.arange(n) % 2
    x = torch.nn.functional.one_hot(y, 2).float() + 0.1 * torch.randn(n, 2)
    masks = [torch.arange(n) % 3 == k for k in range(3)]

    class Data(SimpleNamespace):
        def to(self, device):
            return self

    data = Data(x=x, edge_index=ring(n), y=y, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])
    model = torch.nn.Linear(2, 2)
    res = graphs.fit_nodes(model, data, epochs=60, lr=0.1, progress=False,
                           forward=lambda m, d: m(d.x))
    assert res.test_acc == 1.0 and res.epochs_run == 60 and len(res.history["loss"]) == 60


def test_feature_dropout_distribution_and_layouts():
    torch.manual_seed(4)
    x = (torch.rand(200, 300) < 0.05).float() * 2.0
    out = graphs.feature_dropout(x, 0.6)
    assert bool((out[x == 0] == 0).all())
    kept = (out[x != 0] != 0).float().mean()
    assert abs(float(kept) - 0.4) < 0.05
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 2.0 / 0.4))
    assert graphs.feature_dropout(x, 0.6, training=False) is x
    sp = graphs.feature_dropout(x.to_sparse(), 0.6)
    assert sp.is_sparse and sp.shape == x.shape
    with pytest.raises(ValueError):
        graphs.feature_dropout(x, 1.0)
