"""Tests of dlbook.graph_transformer: Laplacian PE, graph attention (5.17)-(5.19), GT layers."""
import pytest
import torch

from dlbook import graph_transformer as gt
from dlbook import graphs
from dlbook.attention import attention


def random_graph(n: int = 10, m: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, m), generator=g)
    ei = torch.cat([ei, ei.flip(0)], dim=1).unique(dim=1)
    return ei[:, ei[0] != ei[1]]


def test_laplacian_matches_pyg_and_pe_are_eigenvectors():
    from torch_geometric.utils import get_laplacian, to_dense_adj
    ei = gt.grid_graph(3, 5)
    lap = gt.laplacian(ei, 15)
    e, w = get_laplacian(ei, normalization="sym", num_nodes=15)
    torch.testing.assert_close(lap, to_dense_adj(e, edge_attr=w, max_num_nodes=15)[0].double())
    pe, lam = gt.laplacian_pe(ei, 15, 4, return_eigenvalues=True)
    assert pe.shape == (15, 4) and lam.shape == (4,)
    torch.testing.assert_close(lap.float() @ pe, pe * lam, atol=1e-5, rtol=0)
    torch.testing.assert_close(pe.T @ pe, torch.eye(4), atol=1e-5, rtol=0)
    assert bool((lam[1:] >= lam[:-1]).all()) and lam[0] > 1e-6          # trivial one skipped


def test_laplacian_pe_matches_pyg_up_to_sign():
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE
    ei = gt.grid_graph(3, 12)
    pe = gt.laplacian_pe(ei, 36, 6)
    ref = AddLaplacianEigenvectorPE(6, is_undirected=True)(Data(edge_index=ei, num_nodes=36))
    overlap = (pe * ref.laplacian_eigenvector_pe.float()).sum(0).abs()
    torch.testing.assert_close(overlap, torch.ones(6), atol=1e-4, rtol=0)


def test_laplacian_pe_pads_small_graphs_and_rejects_bad_k():
    ei = torch.tensor([[0, 1], [1, 0]])
    pe = gt.laplacian_pe(ei, 2, 3)
    assert pe.shape == (2, 3) and torch.equal(pe[:, 1:], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="k must be"):
        gt.laplacian_pe(ei, 2, 0)
    with pytest.raises(ValueError, match="refers to node"):
        gt.laplacian_pe(ei, 1, 1)


def test_random_sign_flip_per_graph_and_column():
    pe = torch.rand(6, 3) + 0.1
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    out = gt.random_sign_flip(pe, batch, generator=torch.Generator().manual_seed(0))
    signs = out / pe
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(signs[0], signs[1]) and torch.equal(signs[3], signs[5])
    dense = gt.random_sign_flip(pe.view(2, 3, 3))
    assert torch.allclose(dense.abs(), pe.view(2, 3, 3))
    with pytest.raises(ValueError, match="batch must have shape"):
        gt.random_sign_flip(pe, batch[:4])


def test_masked_head_equals_boolean_masked_attention():
    torch.manual_seed(0)
    ei = random_graph()
    adj = graphs.to_dense_adj(ei, 10).clamp(max=1)
    q, k, v = torch.randn(3, 2, 10, 8).unbind(0)
    out, w = gt.graph_head_attention(q, k, v, adj, mode="mask")
    ref, w_ref = attention(q, k, v, mask=(adj + torch.eye(10)) != 0)
    torch.testing.assert_close(out, ref)
    assert bool((w[:, (adj + torch.eye(10)) == 0] == 0).all())          # nothing off the graph


def test_masked_head_uses_edge_weights_on_the_graph():
    torch.manual_seed(1)
    adj = torch.tensor([[0.0, 2.0, 0.0], [2.0, 0.0, 0.5], [0.0, 0.5, 0.0]])
    q, k, v = torch.randn(3, 3, 4).unbind(0)
    _, w = gt.graph_head_attention(q, k, v, adj, mode="mask")
    s = q @ k.T / 2.0
    a_g = adj + torch.eye(3)
    ref = torch.softmax((a_g * s).masked_fill(a_g == 0, float("-inf")), -1)
    torch.testing.assert_close(w, ref)


def test_hadamard_and_full_modes():
    torch.manual_seed(2)
    adj = graphs.to_dense_adj(random_graph(8, 12, 1), 8).clamp(max=1)
    q, k, v = torch.randn(3, 8, 4).unbind(0)
    out, w = gt.graph_head_attention(q, k, v, adj, mode="hadamard")
    ref_w = adj * torch.softmax(q @ k.T / 2.0, -1)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(out, ref_w @ v)
    out, w = gt.graph_head_attention(q, k, v, adj, mode="full")
    torch.testing.assert_close(w, torch.softmax(q @ k.T / 2.0, -1))


def test_multi_head_equals_pyg_transformer_conv():
    from torch_geometric.nn import TransformerConv
    torch.manual_seed(3)
    n, d, h = 10, 16, 4
    ei = random_graph(n)
    x = torch.randn(n, d)
    att = gt.GraphMultiHeadAttention(d, h, mode="mask").eval()
    conv = TransformerConv(d, d // h, heads=h, root_weight=False)
    with torch.no_grad():
        for ours, ref in ((att.q, conv.lin_query), (att.k, conv.lin_key), (att.v, conv.lin_value)):
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
        y, _ = att.heads(x, graphs.to_dense_adj(ei, n))
        torch.testing.assert_close(y, conv(x, graphs.add_self_loops(ei, n)), atol=1e-5, rtol=1e-5)
        assert att(x, graphs.to_dense_adj(ei, n)).shape == (n, d)


def test_same_graph_mask_blocks_attention_between_graphs():
    torch.manual_seed(4)
    batch = torch.tensor([0, 0, 0, 1, 1])
    q, k, v = torch.randn(3, 5, 4).unbind(0)
    _, w = gt.graph_head_attention(q, k, v, torch.zeros(5, 5), mode="full",
                                   allowed=gt.same_graph_mask(batch))
    assert torch.equal(w[:3, 3:], torch.zeros(3, 2)) and torch.equal(w[3:, :3], torch.zeros(2, 3))


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("position", ["post", "pre"])
@pytest.mark.parametrize("mode", ["mask", "hadamard", "full"])
def test_gt_layer_is_permutation_equivariant(norm, position, mode):
    torch.manual_seed(5)
    n, d = 9, 16
    adj = graphs.to_dense_adj(random_graph(n, 14, 2), n).clamp(max=1)
    x = torch.randn(n, d)
    layer = gt.GTLayer(d, 4, mode=mode, norm=norm, norm_position=position).eval()
    perm = torch.randperm(n)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, adj)[perm], layer(x[perm], adj[perm][:, perm]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_gt_layer_equations(position):
    torch.manual_seed(6)
    layer = gt.GTLayer(8, 2, norm="layer", norm_position=position).eval()
    adj = graphs.to_dense_adj(gt.grid_graph(2, 3), 6)
    x = torch.randn(6, 8)
    if position == "post":
        y = layer.norm1(x + layer.attn(x, adj))
        ref = layer.norm2(y + layer.mlp(y))
    else:
        y = x + layer.attn(layer.norm1(x), adj)
        ref = y + layer.mlp(layer.norm2(y))
    torch.testing.assert_close(layer(x, adj), ref)


def test_graph_transformer_shapes_layouts_and_gradients():
    torch.manual_seed(7)
    data = gt.nearest_marker_task(3, k=4, generator=torch.Generator().manual_seed(0))
    model = gt.GraphTransformer(2, 16, 2, n_layers=2, n_heads=2, pe_dim=4, mode="full")
    out = model(data["x"], data["adj"], data["pe"])
    assert out.shape == (3, 36, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the block-diagonal layout gives the same node outputs as the dense one
    model.eval()
    x = data["x"].reshape(-1, 2)
    adj = torch.block_diag(*data["adj"])
    batch = torch.arange(3).repeat_interleave(36)
    torch.testing.assert_close(model(x, adj, data["pe"].reshape(-1, 4), batch),
                               model(data["x"], data["adj"], data["pe"]).reshape(-1, 2),
                               atol=1e-5, rtol=1e-5)
    pooled = gt.GraphTransformer(2, 16, 3, pe_dim=0, readout="mean")(x, adj, batch=batch)
    assert pooled.shape == (3, 3)


def test_nearest_marker_task_labels():
    data = gt.nearest_marker_task(4, generator=torch.Generator().manual_seed(1))
    assert data["x"].shape == (4, 36, 2) and data["adj"].shape == (4, 36, 36)
    for i in range(4):
        red, blue = int(data["x"][i, :, 0].argmax()), int(data["x"][i, :, 1].argmax())
        assert data["y"][i, blue] == 1 and data["y"][i, red] == 0
        assert data["dist"][i, red] == 0 and data["dist"][i, blue] == 0
    layout = gt.grid_layout(data["adj"][0])
    assert layout.shape == (36, 2)
    with pytest.raises(ValueError, match="same number of nodes"):
        gt.nearest_marker_task(1, shapes=((2, 3), (3, 3)))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mode must be"):
        gt.GraphMultiHeadAttention(8, 2, mode="dense")
    with pytest.raises(ValueError, match="norm must be"):
        gt.GTLayer(8, 2, norm="group")
    with pytest.raises(ValueError, match="norm_position"):
        gt.GTLayer(8, 2, norm_position="middle")
    att = gt.GraphMultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="adj must have shape"):
        att(torch.randn(5, 8), torch.zeros(4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        att(torch.randn(5, 8), torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="d_model=8"):
        att(torch.randn(5, 6), torch.zeros(5, 5))
    model = gt.GraphTransformer(2, 8, 2, n_heads=2, pe_dim=3)
    with pytest.raises(ValueError, match="needs pe of shape"):
        model(torch.randn(4, 2), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="readout"):
        gt.GraphTransformer(2, 8, 2, readout="max")
