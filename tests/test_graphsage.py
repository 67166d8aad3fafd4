"""Tests of dlbook.graphsage: the sampler, the mean aggregator, Algorithm 4 vs SAGEConv."""
import pytest
import torch
import torch.nn.functional as F

from dlbook import graphs, graphsage


def random_graph(n: int = 12, m: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, m), generator=g)
    ei = torch.cat([ei, ei.flip(0)], dim=1).unique(dim=1)
    return ei[:, ei[0] != ei[1]]


@pytest.mark.parametrize("k", [1, 2, 3, 100])
def test_sampler_without_replacement_keeps_min_k_deg_distinct_real_edges(k):
    ei = random_graph(20, 60)
    deg = graphs.degree(ei[1], 20, dtype=torch.long)
    s = graphsage.sample_neighbors(ei, 20, k, generator=torch.Generator().manual_seed(1))
    assert s.shape[0] == 2
    assert torch.equal(graphs.degree(s[1], 20, dtype=torch.long), deg.clamp(max=k))
    assert s.unique(dim=1).shape[1] == s.shape[1]
    real = set(map(tuple, ei.t().tolist()))
    assert all(tuple(e) in real for e in s.t().tolist())


def test_sampler_with_replacement_gives_exactly_k():
    ei = random_graph(20, 40)
    deg = graphs.degree(ei[1], 20, dtype=torch.long)
    s = graphsage.sample_neighbors(ei, 20, 5, replace=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(graphs.degree(s[1], 20, dtype=torch.long), torch.where(deg > 0, 5, 0))
    real = set(map(tuple, ei.t().tolist()))
    assert all(tuple(e) in real for e in s.t().tolist())


def test_sampler_is_uniform_roughly():
    # a star: node 0 has 4 in-neighbours; k=1 should pick each about 1/4 of the time
    ei = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(5)
    for _ in range(2000):
        s = graphsage.sample_neighbors(ei, 5, 1, generator=g)
        counts[s[0, 0]] += 1
    assert torch.all((counts[1:] / 2000 - 0.25).abs() < 0.05)


def test_sampler_none_is_identity_and_bad_input():
    ei = random_graph()
    assert graphsage.sample_neighbors(ei, 12, None) is ei
    with pytest.raises(ValueError, match="sample size"):
        graphsage.sample_neighbors(ei, 12, 0)
    with pytest.raises(ValueError, match="refers to node"):
        graphsage.sample_neighbors(ei, 5, 2)
    with pytest.raises(TypeError):
        graphsage.sample_neighbors(ei.float(), 12, 2)


def test_mean_aggregate_matches_loop():
    torch.manual_seed(0)
    ei = random_graph()
    x = torch.randn(12, 3)
    out = graphsage.mean_aggregate(x, ei)
    for v in range(12):
        nb = ei[0][ei[1] == v]
        ref = x[nb].mean(0) if len(nb) else torch.zeros(3)
        torch.testing.assert_close(out[v], ref)


def test_induced_subgraph_relabels():
    ei = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 3, 0, 3]])
    keep = torch.tensor([True, True, False, True])
    sub, nodes = graphsage.induced_subgraph(ei, keep)
    assert nodes.tolist() == [0, 1, 3]
    assert sorted(map(tuple, sub.t().tolist())) == [(0, 1), (1, 2), (2, 0)]
    with pytest.raises(TypeError):
        graphsage.induced_subgraph(ei, keep.long())


@pytest.mark.parametrize("normalize", [False, True])
def test_layer_matches_sageconv(normalize):
    from torch_geometric.nn import SAGEConv

    torch.manual_seed(4)
    ei = random_graph(15, 40)
    x = torch.randn(15, 6, dtype=torch.float64)
    conv = SAGEConv(6, 4).double()
    layer = graphsage.SAGELayer(6, 4, activation=None, normalize=normalize).double().copy_from_pyg(conv)
    ref = conv(x, ei)
    if normalize:
        ref = F.normalize(ref, dim=1)
    torch.testing.assert_close(layer(x, ei), ref, atol=1e-12, rtol=0)
    # Algorithm 4 literally: W^T [x_v || mean x_N(v)]
    lit = torch.cat([x, graphsage.mean_aggregate(x, ei)], 1) @ layer.weight + layer.bias
    torch.testing.assert_close(layer.__class__(6, 4, None, False).double().copy_from_pyg(conv)(x, ei), lit)


def test_layer_gradients_match_sageconv():
    from torch_geometric.nn import SAGEConv

    torch.manual_seed(5)
    ei = random_graph(10, 25)
    x = torch.randn(10, 5, dtype=torch.float64)
    conv = SAGEConv(5, 3).double()
    layer = graphsage.SAGELayer(5, 3).double().copy_from_pyg(conv)
    (layer(x, ei) ** 2).sum().backward()
    (F.normalize(torch.relu(conv(x, ei)), dim=1) ** 2).sum().backward()
    gw = torch.cat([conv.lin_r.weight.grad.t(), conv.lin_l.weight.grad.t()], 0)
    torch.testing.assert_close(layer.weight.grad, gw, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.bias.grad, conv.lin_l.bias.grad, atol=1e-12, rtol=0)


def test_layer_bad_input():
    layer = graphsage.SAGELayer(4, 2)
    ei = random_graph(6, 10)
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(6, 3), ei)
    with pytest.raises(ValueError, match="refers to node"):
        layer(torch.randn(6, 4), torch.tensor([[0, 9], [1, 2]]))
    with pytest.raises(TypeError):
        layer(torch.ones(6, 4, dtype=torch.long), ei)
    with pytest.raises(ValueError):
        graphsage.SAGELayer(4, 2, activation="tanh")


def test_graphsage_model_shapes_sampling_and_sparse_input():
    torch.manual_seed(6)
    ei = random_graph(30, 80)
    x = (torch.rand(30, 20) < 0.1).float()
    model = graphsage.GraphSAGE(20, 8, 3, sizes=(2, 3))
    out = model(x, ei)
    assert out.shape == (30, 3)
    z = model.embed(x, ei)
    nz = z.norm(dim=1) > 0
    torch.testing.assert_close(z.norm(dim=1)[nz], torch.ones(int(nz.sum())))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    torch.testing.assert_close(model(x, ei), model(x.to_sparse(), ei))
    torch.testing.assert_close(model(x, ei), model(x, ei))         # eval: full neighbourhoods
    with pytest.raises(ValueError):
        graphsage.GraphSAGE(20, 8, 3, sizes=(0,))


def test_blocks_with_full_neighbourhoods_reproduce_the_full_graph_forward():
    torch.manual_seed(7)
    ei = random_graph(40, 100, seed=3)
    x = torch.randn(40, 6, dtype=torch.float64)
    model = graphsage.GraphSAGE(6, 5, 3, sizes=(None, None)).double().eval()
    targets = torch.tensor([3, 17, 0, 29])
    nodes, blocks = graphsage.sample_blocks(targets, ei, 40, (None, None))
    assert torch.equal(nodes[:4], targets)
    assert [b.n_dst for b in blocks] == [blocks[1].n_src, 4]
    torch.testing.assert_close(model.forward_blocks(x[nodes], blocks),
                               model(x, ei)[targets], atol=1e-12, rtol=0)


def test_sampled_blocks_hold_real_edges_at_most_k_per_target_and_nested_prefixes():
    ei = random_graph(50, 160, seed=4)
    real = set(map(tuple, ei.t().tolist()))
    gen = torch.Generator().manual_seed(0)
    targets = torch.tensor([5, 9, 44])
    nodes, blocks = graphsage.sample_blocks(targets, ei, 50, (3, 2), generator=gen)
    assert nodes.unique().numel() == nodes.numel()
    assert blocks[1].n_dst == 3 and blocks[0].n_dst == blocks[1].n_src
    assert blocks[0].n_src == nodes.numel()
    deg = graphs.degree(ei[1], 50, dtype=torch.long)
    for block, k in zip(blocks, (3, 2)):
        src, dst = block.edge_index
        assert int(src.max()) < block.n_src and int(dst.max()) < block.n_dst
        assert all((int(nodes[j]), int(nodes[i])) in real for j, i in block.edge_index.t())
        got = graphs.degree(dst, block.n_dst, dtype=torch.long)
        assert torch.equal(got, deg[nodes[: block.n_dst]].clamp(max=k))


def test_forward_blocks_trains_and_fit_minibatch_records_the_cost():
    from torch_geometric.data import Data

    torch.manual_seed(8)
    ei = random_graph(60, 200, seed=5)
    y = torch.randint(0, 3, (60,))
    x = F.one_hot(y, 3).double() + 0.3 * torch.randn(60, 3, dtype=torch.float64)
    masks = torch.zeros(3, 60, dtype=torch.bool)
    masks[0, :30], masks[1, 30:45], masks[2, 45:] = True, True, True
    data = Data(x=x, edge_index=ei, y=y, train_mask=masks[0], val_mask=masks[1],
                test_mask=masks[2])
    model = graphsage.GraphSAGE(3, 8, 3, sizes=(4, 3), dropout=0.0).double()
    res = graphsage.fit_minibatch(model, data, batch_size=8, epochs=30, lr=0.05,
                                  generator=torch.Generator().manual_seed(0),
                                  progress=False)
    assert res.epochs_run == 30 and len(res.history["train_seconds"]) == 30
    assert len(res.history["nodes_per_step"]) == 30 * 4            # ceil(30 / 8) steps
    assert max(res.history["nodes_per_step"]) <= 60
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert res.val_acc > 0.6


def test_sample_blocks_and_forward_blocks_reject_bad_input():
    ei = random_graph(20, 50)
    with pytest.raises(ValueError, match="distinct"):
        graphsage.sample_blocks(torch.tensor([1, 1]), ei, 20, (2,))
    with pytest.raises(ValueError, match="lie in"):
        graphsage.sample_blocks(torch.tensor([25]), ei, 20, (2,))
    with pytest.raises(ValueError, match="1-D int64"):
        graphsage.sample_blocks(torch.tensor([1.0]), ei, 20, (2,))
    nodes, blocks = graphsage.sample_blocks(torch.tensor([1, 2]), ei, 20, (2,))
    model = graphsage.GraphSAGE(4, 5, 2, sizes=(2, 2))
    with pytest.raises(ValueError, match="blocks for a model"):
        model.forward_blocks(torch.randn(len(nodes), 4), blocks)
    with pytest.raises(ValueError, match="batch_size"):
        graphsage.fit_minibatch(model, None, batch_size=0)
