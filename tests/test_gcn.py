"""Tests of dlbook.gcn: message passing, the GCN layer vs PyG, batching, pooling, WL."""
import pytest
import torch

from dlbook import gcn, graphs


def ring(n: int, offset: int = 0) -> torch.Tensor:
    src = torch.arange(n)
    dst = (src + 1) % n
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1) + offset


def random_graph(n: int = 12, m: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, m), generator=g)
    ei = torch.cat([ei, ei.flip(0)], dim=1).unique(dim=1)
    return ei[:, ei[0] != ei[1]]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_message_passing_default_is_aggregate_of_neighbours(reduce):
    torch.manual_seed(0)
    ei = random_graph()
    x = torch.randn(12, 4)
    out = gcn.message_passing(x, ei, reduce=reduce)
    for i in range(12):
        nb = x[ei[0][ei[1] == i]]
        if len(nb) == 0:
            assert torch.equal(out[i], torch.zeros(4))
            continue
        ref = {"sum": nb.sum(0), "mean": nb.mean(0), "max": nb.max(0).values}[reduce]
        torch.testing.assert_close(out[i], ref)


def test_message_passing_custom_message_update():
    ei = ring(5)
    x = torch.arange(5.0).unsqueeze(1)
    out = gcn.message_passing(x, ei, message=lambda xj, xi: xj - xi, update=lambda x, m: x + m)
    # on a ring x_i + (x_{i-1} - x_i) + (x_{i+1} - x_i) = x_{i-1} + x_{i+1} - x_i
    ref = x.roll(1, 0) + x.roll(-1, 0) - x
    torch.testing.assert_close(out, ref)


def test_gcn_propagate_equals_dense_a_hat():
    torch.manual_seed(1)
    ei = random_graph()
    x = torch.randn(12, 3)
    torch.testing.assert_close(gcn.gcn_propagate(x, ei), graphs.normalized_adjacency(ei, 12) @ x)


@pytest.mark.parametrize("sparse", [False, True])
def test_gcn_layer_matches_pyg(sparse):
    from torch_geometric.nn import GCNConv

    torch.manual_seed(2)
    ei = random_graph(15, 40)
    x = torch.randn(15, 6)
    conv = GCNConv(6, 4)
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    layer = gcn.GCNLayer.from_pyg(conv, sparse=sparse)
    torch.testing.assert_close(layer(x, ei), conv(x, ei), atol=1e-5, rtol=1e-5)


def test_gcn_layer_gradient_matches_pyg_and_cache():
    from torch_geometric.nn import GCNConv

    torch.manual_seed(3)
    ei = random_graph()
    x = torch.randn(12, 5)
    conv = GCNConv(5, 3)
    layer = gcn.GCNLayer.from_pyg(conv, sparse=True)
    layer(x, ei).pow(2).sum().backward()
    conv(x, ei).pow(2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, conv.lin.weight.grad.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.bias.grad, conv.bias.grad, atol=1e-5, rtol=1e-5)
    a1 = layer.adjacency(ei, 12)
    assert layer.adjacency(ei, 12) is a1               # cached
    other = ring(12)
    assert layer.adjacency(other, 12) is not a1        # rebuilt for a new graph
    assert gcn.GCNLayer(5, 2, sparse=True).adjacency(ei, 12) is a1   # shared by layers
    ei2 = ei.clone()
    ei2[0, 0] = ei2[1, 0]
    assert layer.adjacency(ei2, 12) is not a1
    ei2.copy_(ei)
    b = layer.adjacency(ei2, 12)
    ei2[0, 0] = ei2[1, 0]                             # in-place change: version bump
    assert layer.adjacency(ei2, 12) is not b


def test_gcn_layer_shapes_and_bad_input():
    layer = gcn.GCNLayer(3, 2)
    assert layer(torch.randn(5, 3), ring(5)).shape == (5, 2)
    with pytest.raises(ValueError, match="3 input features"):
        layer(torch.randn(5, 4), ring(5))
    with pytest.raises(ValueError, match="node 7"):
        layer(torch.randn(5, 3), torch.tensor([[0, 7], [1, 2]]))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(5, 3, dtype=torch.long), ring(5))
    with pytest.raises(TypeError, match="GCNConv"):
        gcn.GCNLayer.from_pyg(torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="positive"):
        gcn.GCNLayer(0, 2)


def test_gcn_model_ours_equals_pyg_with_copied_weights():
    torch.manual_seed(4)
    ei = random_graph(20, 50)
    x = torch.randn(20, 7)
    pyg = gcn.GCN(7, 8, 3, layers=3, layer="pyg").eval()
    ours = gcn.GCN(7, 8, 3, layers=3, layer="ours").eval()
    for a, b in zip(ours.convs, pyg.convs):
        a.copy_from_pyg(b)
    torch.testing.assert_close(ours(x, ei), pyg(x, ei), atol=1e-5, rtol=1e-5)
    states = ours.hidden_states(x, ei)
    assert [tuple(s.shape) for s in states] == [(20, 7), (20, 8), (20, 8), (20, 3)]
    with pytest.raises(ValueError, match="layer"):
        gcn.GCN(7, 8, 3, layer="mine")
    with pytest.raises(ValueError, match="dropout"):
        gcn.GCN(7, 8, 3, dropout=1.0)


def test_gcn_residual_and_fit_nodes():
    from types import SimpleNamespace

    torch.manual_seed(5)
    n = 60
    y = (torch.arange(n) >= n // 2).long()
    ei = torch.cat([ring(n // 2), ring(n // 2, n // 2)], dim=1)    # two rings, one per class
    x = torch.randn(n, 4) + 0.7 * y.unsqueeze(1)
    masks = [torch.arange(n) % 3 == k for k in range(3)]

    class Data(SimpleNamespace):
        def to(self, device):
            return self

    data = Data(x=x, edge_index=ei, y=y, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])
    model = gcn.GCN(4, 8, 2, layers=4, residual=True, dropout=0.0)
    res = graphs.fit_nodes(model, data, epochs=100, lr=0.05, progress=False)
    assert res.test_acc > 0.9


def test_block_diagonal_batch_matches_pyg_and_mean_pool():
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import global_mean_pool

    torch.manual_seed(6)
    sizes = [5, 14, 12, 15]
    data = [Data(x=torch.randn(n, 3), edge_index=random_graph(n, 2 * n, seed=n), y=torch.tensor([k]))
            for k, n in enumerate(sizes)]
    ours = gcn.block_diagonal_batch(data)
    ref = Batch.from_data_list(data)
    assert ours.x.shape == (46, 3) and ours.num_graphs == 4
    assert torch.equal(ours.x, ref.x) and torch.equal(ours.edge_index, ref.edge_index)
    assert torch.equal(ours.batch, ref.batch) and torch.equal(ours.ptr, ref.ptr) and torch.equal(ours.y, ref.y)
    torch.testing.assert_close(gcn.mean_pool(ours.x, ours.batch), global_mean_pool(ref.x, ref.batch))
    # Â of the union is block diagonal (5.5)
    a = graphs.normalized_adjacency(ours.edge_index, 46)
    torch.testing.assert_close(a[5:19, 5:19], graphs.normalized_adjacency(data[1].edge_index, 14))
    assert a[:5, 5:].abs().sum() == 0
    with pytest.raises(ValueError, match="feature dimension"):
        gcn.block_diagonal_batch([(torch.randn(3, 2), ring(3)), (torch.randn(3, 4), ring(3))])
    with pytest.raises(ValueError, match="at least one"):
        gcn.block_diagonal_batch([])
    with pytest.raises(TypeError, match="edge_index"):
        gcn.block_diagonal_batch([torch.randn(3, 2)])


def test_graph_classifier_shapes_and_gradient():
    torch.manual_seed(7)
    b = gcn.block_diagonal_batch([(torch.randn(n, 3), ring(n)) for n in (4, 6, 5)])
    model = gcn.GraphClassifier(3, 8, 6, layers=2)
    out = model(b.x, b.edge_index, b.batch, b.num_graphs)
    assert out.shape == (3, 6)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dirichlet_energy():
    torch.manual_seed(8)
    ei = random_graph()
    n = 12
    x = torch.randn(n, 3, dtype=torch.float64)
    a_hat = graphs.normalized_adjacency(ei, n).double()
    ref = torch.trace(x.T @ (torch.eye(n, dtype=torch.float64) - a_hat) @ x)
    torch.testing.assert_close(gcn.dirichlet_energy(x, ei), ref)
    # zero on the dominant eigenvector D̃^{1/2} 1 of Â
    deg = graphs.degree(graphs.add_self_loops(ei, n)[1], n, dtype=torch.float64)
    const = deg.sqrt().unsqueeze(1) * torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    assert gcn.dirichlet_energy(const, ei) < 1e-12
    rel = gcn.dirichlet_energy(x, ei, relative=True)
    assert 0 <= rel < 2
    # smoothing by Â lowers the relative energy
    assert gcn.dirichlet_energy(a_hat @ x, ei, relative=True) < rel


def test_wl_two_triangles_vs_hexagon():
    triangles = torch.cat([ring(3), ring(3, 3)], dim=1)
    hexagon = ring(6)
    assert torch.equal(gcn.wl_colors(triangles, 6, 3), gcn.wl_colors(hexagon, 6, 3))
    assert gcn.wl_equivalent((triangles, 6), (hexagon, 6))
    path = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 5], [1, 0, 2, 1, 3, 2, 4, 3, 5, 4]])
    assert not gcn.wl_equivalent((path, 6), (hexagon, 6))
    colors = gcn.wl_colors(path, 6, 3)
    assert colors[0] == colors[5] and colors[1] == colors[4] and colors[0] != colors[2]
    with pytest.raises(ValueError, match="iterations"):
        gcn.wl_colors(path, 6, -1)
    with pytest.raises(ValueError, match="initial"):
        gcn.wl_colors(path, 6, 1, initial=[0, 1])


def sign_graphs(count: int, noise: float, seed: int) -> list:
    """Rings of 4-8 nodes whose label is the sign of their (noisy) node features."""
    g = torch.Generator().manual_seed(seed)
    graphs_ = []
    for k in range(count):
        n, label = 4 + k % 5, k % 2
        x = (2.0 * label - 1.0) * torch.ones(n, 2) + noise * torch.randn(n, 2, generator=g)
        graphs_.append((x, ring(n), torch.tensor([label])))
    return graphs_


def test_fit_graphs_learns_feature_sign():
    graphs_ = sign_graphs(24, 0.3, seed=0)
    torch.manual_seed(0)
    model = gcn.GraphClassifier(2, 8, 2, layers=2, sparse=True)
    res = gcn.fit_graphs(model, graphs_, graphs_, epochs=30, batch_size=4, lr=0.02, progress=False)
    assert res.test_acc == 1.0 and len(res.history["loss"]) == 30
    assert res.history["loss"][-1] < res.history["loss"][0]
    batches = gcn.graph_batches(graphs_, 5)
    assert [b.num_graphs for b in batches] == [5, 5, 5, 5, 4]
    with pytest.raises(ValueError, match="batch_size"):
        gcn.graph_batches(graphs_, 0)


@pytest.mark.parametrize("sparse", [False, True])
def test_gcn_in_float64_matches_pyg_to_1e12(sparse):
    """Â is built in the features' dtype: a float64 GCN is float64-accurate."""
    from torch_geometric.nn import GCNConv

    torch.manual_seed(3)
    ei = random_graph(20, 60)
    x = torch.randn(20, 5, dtype=torch.float64)
    conv = GCNConv(5, 3).double()
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    layer = gcn.GCNLayer.from_pyg(conv, sparse=sparse)
    out = layer(x, ei)
    assert out.dtype == torch.float64
    assert layer.adjacency(ei, 20, torch.float64).dtype == torch.float64
    torch.testing.assert_close(out, conv(x, ei), atol=1e-12, rtol=1e-12)
    a64 = graphs.normalized_adjacency(ei, 20, dtype=torch.float64)
    torch.testing.assert_close(gcn.gcn_propagate(x, ei), a64 @ x, atol=1e-12, rtol=1e-12)
    # the float32 Â of the same graph differs from the float64 one by float32 rounding
    a32 = graphs.normalized_adjacency(ei, 20)
    assert a32.dtype == torch.float32 and 0 < (a32.double() - a64).abs().max() < 1e-6


def test_fit_graphs_keeps_the_best_validation_epoch_and_stops_early():
    graphs_ = sign_graphs(40, 0.8, seed=1)
    train, val, test = graphs_[:24], graphs_[24:32], graphs_[32:]
    torch.manual_seed(0)
    model = gcn.GraphClassifier(2, 8, 2, layers=2, sparse=True)
    res = gcn.fit_graphs(model, train, test, epochs=40, batch_size=4, lr=0.02, progress=False,
                         val_graphs=val, patience=5)
    h = res.history
    ran = len(h["loss"])
    assert len(h["val_acc"]) == len(h["val_loss"]) == ran <= 40
    best = res.best_epoch
    # the kept epoch: highest validation accuracy, then lowest validation loss, then earliest
    key = [(-a, l) for a, l in zip(h["val_acc"], h["val_loss"])]
    assert key.index(min(key)) == best - 1 and res.val_acc == h["val_acc"][best - 1]
    assert ran == 40 or ran - best == 5          # stopped after `patience` epochs without a new best
    # the model holds the weights of the kept epoch: its validation score is that epoch's
    val_loss, val_acc = gcn._graph_scores(model, gcn.graph_batches(val, 256))
    assert val_acc == res.val_acc and abs(val_loss - h["val_loss"][best - 1]) < 1e-5
    assert res.test_acc == gcn._graph_scores(model, gcn.graph_batches(test, 256))[1]
    without = gcn.fit_graphs(gcn.GraphClassifier(2, 8, 2, layers=2), train, test, epochs=2,
                             progress=False)
    assert without.best_epoch is None and without.val_acc is None and "val_acc" not in without.history
    with pytest.raises(ValueError, match="patience"):
        gcn.fit_graphs(model, train, test, epochs=2, progress=False, patience=3)


def test_graph_classifier_without_edges_is_a_per_node_mlp_and_a_mean():
    torch.manual_seed(0)
    xs = [torch.randn(n, 3) for n in (3, 5)]
    b = gcn.block_diagonal_batch([(x, torch.empty(2, 0, dtype=torch.long)) for x in xs])
    for sparse in (False, True):
        torch.manual_seed(1)
        model = gcn.GraphClassifier(3, 8, 4, layers=3, sparse=sparse).eval()
        with torch.no_grad():
            z = model(b.x, b.edge_index, b.batch, 2)
            for k, x in enumerate(xs):
                h = x
                for conv in model.convs:
                    h = torch.relu(h @ conv.weight + conv.bias)
                torch.testing.assert_close(z[k], model.head(h.mean(0)), atol=1e-6, rtol=1e-6)
