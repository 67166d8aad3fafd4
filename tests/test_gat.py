"""Tests of dlbook.gat: scores, sparse vs dense attention, the layer vs GATConv, the model."""
import pytest
import torch
import torch.nn.functional as F

from dlbook import gat, graphs


def random_graph(n: int = 12, m: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, m), generator=g)
    ei = torch.cat([ei, ei.flip(0)], dim=1).unique(dim=1)
    return ei[:, ei[0] != ei[1]]


def test_scores_equal_concatenation_form():
    torch.manual_seed(0)
    n, H, d = 7, 2, 3
    ei = graphs.add_self_loops(random_graph(n, 12), n)
    g = torch.randn(n, H, d, dtype=torch.float64)
    a_dst, a_src = torch.randn(H, d, dtype=torch.float64), torch.randn(H, d, dtype=torch.float64)
    e = gat.attention_scores(g, a_dst, a_src, ei)
    for col in range(ei.shape[1]):
        j, i = ei[:, col].tolist()
        for h in range(H):
            a = torch.cat([a_dst[h], a_src[h]])
            ref = F.leaky_relu(a @ torch.cat([g[i, h], g[j, h]]), 0.2)
            torch.testing.assert_close(e[col, h], ref)


def test_sparse_equals_dense_and_rows_sum_to_one():
    torch.manual_seed(1)
    n, H, d = 9, 3, 4
    ei = graphs.add_self_loops(random_graph(n, 15), n)
    g = torch.randn(n, H, d, dtype=torch.float64)
    a_dst, a_src = torch.randn(H, d, dtype=torch.float64), torch.randn(H, d, dtype=torch.float64)
    adj = graphs.to_dense_adj(ei, n)
    out_s, al_s = gat.sparse_attention(g, a_dst, a_src, ei)
    out_d, al_d = gat.dense_attention(g, a_dst, a_src, adj)
    torch.testing.assert_close(out_s, out_d, atol=1e-12, rtol=0)
    torch.testing.assert_close(al_s, al_d[ei[1], ei[0]], atol=1e-12, rtol=0)
    torch.testing.assert_close(al_d.sum(1), torch.ones(n, H, dtype=torch.float64))
    assert bool((al_d[adj == 0] == 0).all())


@pytest.mark.parametrize("concat", [True, False])
def test_layer_matches_gatconv_outputs_and_gradients(concat):
    from torch_geometric.nn import GATConv

    torch.manual_seed(2)
    ei = random_graph(15, 40)
    x = torch.randn(15, 6, dtype=torch.float64)
    conv = GATConv(6, 4, heads=3, concat=concat).double()
    layer = gat.GATLayer(6, 4, heads=3, concat=concat).double().copy_from_pyg(conv)
    y, y_ref = layer(x, ei), conv(x, ei)
    assert y.shape == ((15, 12) if concat else (15, 4))
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer(x, ei, dense=True), y_ref, atol=1e-12, rtol=0)
    (y ** 2).sum().backward()
    (y_ref ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, conv.lin.weight.grad.t(), atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.att_src.grad, conv.att_src.grad[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.att_dst.grad, conv.att_dst.grad[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.bias.grad, conv.bias.grad, atol=1e-12, rtol=0)


def test_keep_attention_and_sparse_input():
    torch.manual_seed(3)
    ei = random_graph(10, 20)
    x = (torch.rand(10, 8) < 0.3).float()
    layer = gat.GATLayer(8, 2, heads=2)
    layer.keep_attention = True
    y = layer(x, ei)
    assert layer.alpha.shape == (ei.shape[1] + 10, 2)
    sums = graphs.aggregate(layer.alpha, layer.alpha_edge_index[1], 10)
    torch.testing.assert_close(sums, torch.ones(10, 2))
    torch.testing.assert_close(layer(x.to_sparse(), ei), y)


def test_gat_model_shapes_and_gradients():
    torch.manual_seed(5)
    ei = random_graph(20, 50)
    x = torch.rand(20, 10)
    for layer in ("ours", "pyg"):
        model = gat.GAT(10, 4, 3, heads=2, layer=layer)
        out = model(x, ei)
        assert out.shape == (20, 3)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_bad_input_raises_clear_errors():
    layer = gat.GATLayer(4, 2, heads=2)
    ei = random_graph(6, 10)
    with pytest.raises(ValueError, match="refers to node"):
        layer(torch.randn(6, 4), torch.tensor([[0, 7], [1, 2]]))
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(6, 5), ei)
    with pytest.raises(TypeError):
        layer(torch.randn(6, 4), ei.float())
    with pytest.raises(ValueError):
        gat.GATLayer(4, 2, heads=0)
    g = torch.randn(6, 2, 3)
    with pytest.raises(ValueError, match="a_dst"):
        gat.attention_scores(g, torch.randn(2, 4), torch.randn(2, 3), ei)
    with pytest.raises(ValueError, match="self-loops"):
        gat.dense_attention(g, torch.randn(2, 3), torch.randn(2, 3), torch.zeros(6, 6))
    with pytest.raises(ValueError, match="layer"):
        gat.GAT(4, 2, 3, layer="dgl")


def test_benchmark_compares_training_steps_and_rejects_bad_repeats():
    from torch import nn

    from dlbook import benchmarks

    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    mask = torch.ones(20, dtype=torch.bool)

    class Plain(nn.Module):                      # the (x, edge_index) signature of a GNN
        def __init__(self, width):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3))

        def forward(self, x, edge_index):
            return self.net(x)

    small, large = Plain(4), Plain(512)
    before = [p.clone() for p in small.parameters()]
    result = benchmarks.compare_steps(small, large, x, None, y, mask, repeats=3)
    assert result.ours > 0 and result.reference > 0
    assert result.ratio == result.reference / result.ours
    assert any(not torch.equal(a, b) for a, b in zip(before, small.parameters()))  # trained
    with pytest.raises(ValueError, match="repeats"):
        benchmarks.compare_steps(small, large, x, None, y, mask, repeats=0)
