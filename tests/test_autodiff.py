import numpy as np
import pytest
import torch

from dlbook import autodiff as ad


def _torch_grads(fn, arrays):
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    fn(*ts).backward()
    return [t.grad.numpy() for t in ts]


def _ours(fn, arrays):
    ts = [ad.Tensor(a) for a in arrays]
    out = fn(*ts)
    out.backward()
    return out.item(), [t.grad for t in ts]


EXPRESSIONS = [
    (lambda a, b: (a * b + a).sum(), [(3, 4), (3, 4)]),
    (lambda a, b: (a @ b).tanh().sum(), [(3, 4), (4, 2)]),
    (lambda a, b: ((a @ b).relu() * 2.0 - 1.0).exp().sum(), [(5, 3), (3, 2)]),
    (lambda a, b: (a + b).exp().sum(axis=1).log().sum(), [(4, 3), (1, 3)]),     # broadcast row
    (lambda a, b: (a * b).sum(axis=0).tanh().sum(), [(4, 3), (3,)]),            # broadcast vector
    (lambda a, b: (a / (b * b + 1.0)).sum() + (a ** 2).mean(), [(2, 3), (2, 1)]),
    (lambda a, b: (a @ b).sum() * (a.sum() - 3.0), [(3,), (3, 2)]),              # vector @ matrix
]


@pytest.mark.parametrize("fn,shapes", EXPRESSIONS)
def test_gradients_match_torch_and_finite_differences(fn, shapes):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s) for s in shapes]
    value, ours = _ours(fn, arrays)
    ref = _torch_grads(fn, arrays)
    for g, r, a in zip(ours, ref, arrays):
        assert g.shape == a.shape
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)
    num = ad.numerical_gradient(lambda *xs: fn(*map(ad.Tensor, xs)).item(), arrays)
    for g, n in zip(ours, num):
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-7)


def test_shared_node_accumulates_errors():
    x = ad.Tensor(3.0, name="x")
    y = x * x + x            # x is used three times
    y.backward()
    assert x.grad == pytest.approx(2 * 3.0 + 1)


def test_mlp_cross_entropy_matches_autograd():
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(6, 5)), rng.integers(0, 3, size=6)
    W1, b1, W2, b2 = rng.normal(size=(5, 4)), rng.normal(size=(1, 4)), rng.normal(size=(4, 3)), rng.normal(size=(1, 3))
    params = [ad.Tensor(p) for p in (W1, b1, W2, b2)]
    loss = ad.cross_entropy((ad.Tensor(x) @ params[0] + params[1]).relu() @ params[2] + params[3], labels)
    loss.backward()
    tp = [torch.tensor(p, requires_grad=True) for p in (W1, b1, W2, b2)]
    z = torch.relu(torch.tensor(x) @ tp[0] + tp[1]) @ tp[2] + tp[3]
    ref = torch.nn.functional.cross_entropy(z, torch.tensor(labels))
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    for p, t in zip(params, tp):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_topological_sort_parents_first():
    a, b = ad.Tensor(1.0, name="a"), ad.Tensor(2.0, name="b")
    c = a * b
    d = c + a
    e = d.tanh() * c
    order = ad.topological_sort(e)
    pos = {id(n): i for i, n in enumerate(order)}
    assert order[-1] is e and len(order) == len({id(n) for n in order})
    for n in order:
        for p in n.parents:
            assert pos[id(p)] < pos[id(n)]
    nodes, edges = ad.graph_edges(e)
    assert len(nodes) == len(order) and all(i < j for i, j in edges)


def test_deep_chain_no_recursion_error():
    x = ad.Tensor(0.5)
    y = x
    for _ in range(3000):
        y = y * 1.0
    y.backward()
    assert x.grad == pytest.approx(1.0)


def test_unbroadcast():
    g = np.ones((2, 3, 4))
    assert ad.unbroadcast(g, (3, 1)).shape == (3, 1)
    assert ad.unbroadcast(g, (3, 1))[0, 0] == 8
    with pytest.raises(ValueError):
        ad.unbroadcast(g, (5,))


def test_bad_input():
    with pytest.raises(ValueError, match="scalar"):
        ad.Tensor(np.ones(3)).backward()
    with pytest.raises(ValueError, match="matmul"):
        ad.Tensor(np.ones((2, 3))) @ ad.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="positive"):
        ad.Tensor(np.array([-1.0, 1.0])).log()
    with pytest.raises(TypeError):
        ad.Tensor(ad.Tensor(1.0))
    with pytest.raises(TypeError):
        ad.topological_sort(3.0)


def test_draw_graph_runs():
    import matplotlib
    matplotlib.use("Agg")
    x, y = ad.Tensor(1.0, name="x"), ad.Tensor(2.0, name="y")
    f = (x * y + x.exp()).log()
    f.backward()
    ax = ad.draw_graph(f, show_grad=True)
    assert ax.get_title() == "computational graph"
    ax = ad.draw_graph(f, leaves_left=False, title="compact")
    assert ax.get_title() == "compact"
