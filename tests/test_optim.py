import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import optim, training


def _model(dtype, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _run(model, opt, steps=40, seed=1):
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen).to(dtype)
        y = torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


CASES = [
    (lambda p: optim.Momentum(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda p: optim.Momentum(p, lr=0.1, momentum=0.0), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda p: optim.AdaGrad(p, lr=0.05), lambda p: torch.optim.Adagrad(p, lr=0.05)),
    (lambda p: optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    (lambda p: optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
     lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6)),
]


@pytest.mark.parametrize("ours,ref", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_optimizers_match_torch(ours, ref, dtype, tol):
    a, b = _model(dtype), _model(dtype)
    wa = _run(a, ours(a.parameters()))
    wb = _run(b, ref(b.parameters()))
    assert (wa - wb).abs().max().item() <= tol


def test_momentum_is_seed_form_319():
    """w_{j+1} = w_j - η g_j + ν (w_j - w_{j-1}) gives the same iterates as torch's form."""
    A = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    f, grad = optim.quadratic(A, torch.tensor([1.0, -2.0], dtype=torch.float64))
    eta, nu = 0.1, 0.8
    w = nn.Parameter(torch.tensor([2.0, 2.0], dtype=torch.float64))
    opt = optim.Momentum([w], lr=eta, momentum=nu)
    prev = cur = w.detach().clone()
    for _ in range(30):
        nxt = cur - eta * grad(cur) + nu * (cur - prev)
        prev, cur = cur, nxt
        opt.zero_grad()
        f(w).backward()
        opt.step()
        assert torch.allclose(w.detach(), cur, atol=1e-12)


def test_adam_eps_placement_differs():
    a, b = _model(torch.float64), _model(torch.float64)
    wa = _run(a, optim.Adam(a.parameters(), lr=1e-2, eps=1e-8))
    wb = _run(b, optim.Adam(b.parameters(), lr=1e-2, eps=1e-8, eps_inside_sqrt=True))
    assert (wa - wb).abs().max().item() > 1e-9
    # one step on a single coordinate: sqrt(v̂ + ε) vs sqrt(v̂) + ε, with m̂ = g, v̂ = g²
    for inside, expected in [(False, 1e-3 * 1e-4 / (1e-4 + 1e-8)), (True, 1e-3 * 1e-4 / math.sqrt(1e-8 + 1e-8))]:
        w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        opt = optim.Adam([w], lr=1e-3, eps=1e-8, eps_inside_sqrt=inside)
        w.grad = torch.tensor([1e-4], dtype=torch.float64)
        opt.step()
        assert w.item() == pytest.approx(-expected, rel=1e-10)


def test_proximal_l1_gives_exact_zeros_and_matches_softshrink():
    x = torch.linspace(-2, 2, 101, dtype=torch.float64)
    assert torch.equal(optim.soft_threshold(x, 0.5), F.softshrink(x, 0.5))
    w = nn.Parameter(torch.tensor([0.3, -0.05, 1.0], dtype=torch.float64))
    opt = optim.ProximalL1([w], lr=0.5, l1=0.2)
    w.grad = torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64)
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([0.2, 0.0, 0.8], dtype=torch.float64))
    assert (w == 0).sum() == 1


def test_line_searches_on_quadratic():
    A = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    f, grad = optim.quadratic(A, b)
    w = torch.tensor([3.0, 1.0], dtype=torch.float64)
    g = grad(w)
    eta = optim.exact_step(A, g)
    etas = torch.linspace(0, 1, 100001, dtype=torch.float64)
    values = torch.stack([f(w - e * g) for e in etas[::100]])
    assert abs(float(etas[::100][values.argmin()]) - float(eta)) < 1e-3
    # the derivative of η -> f(w - η g) vanishes at the exact step
    e = torch.tensor(float(eta), dtype=torch.float64, requires_grad=True)
    d, = torch.autograd.grad(f(w - e * g), e)
    assert abs(d.item()) < 1e-12
    ea = optim.armijo_step(f, w, g)
    assert f(w - ea * g) <= f(w) - 1e-4 * ea * (g @ g)
    w_star = torch.linalg.solve(A, b)
    for step in ("exact", "armijo", 0.1, optim.robbins_monro(1.0, 10.0)):
        path = optim.gradient_descent(f, grad, torch.zeros(2, dtype=torch.float64), step, A=A, tol=1e-10,
                                      max_iter=2_000 if callable(step) else 10_000)
        assert path.shape[1] == 2
        if not callable(step):
            assert torch.allclose(path[-1], w_star, atol=1e-9)


def test_robbins_monro_values():
    eta = optim.robbins_monro(2.0, 4.0)
    assert [eta(j) for j in range(3)] == [0.5, 0.4, 2.0 / 6.0]


def test_plugs_into_fit():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    for make in (lambda p: optim.Adam(p, lr=1e-2), lambda p: optim.ProximalL1(p, lr=0.1, l1=1e-3),
                 lambda p: optim.AdaGrad(p), lambda p: optim.Momentum(p, lr=0.05)):
        model = _model(torch.float32)
        h = training.fit(model, training.batches(x, y, 16), F.cross_entropy, make(model.parameters()), 5,
                         progress=False)
        assert h["train_loss"][-1] < h["train_loss"][0]


def test_bad_input():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        optim.Adam(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="eps_inside_sqrt"):
        optim.Adam(p, eps_inside_sqrt="yes")
    with pytest.raises(ValueError, match="momentum"):
        optim.Momentum(p, momentum=1.0)
    with pytest.raises(TypeError, match="lr"):
        optim.AdaGrad(p, lr="0.1")
    with pytest.raises(ValueError, match="l1"):
        optim.ProximalL1(p, l1=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        optim.soft_threshold(torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match="symmetric"):
        optim.quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(d, d\)"):
        optim.exact_step(torch.eye(3), torch.ones(2))
    A = torch.eye(2)
    f, grad = optim.quadratic(A, torch.ones(2))
    with pytest.raises(ValueError, match="needs the quadratic"):
        optim.gradient_descent(f, grad, torch.zeros(2), "exact")
    with pytest.raises(ValueError, match="step must be"):
        optim.gradient_descent(f, grad, torch.zeros(2), "newton")
    with pytest.raises(ValueError, match="b"):
        optim.robbins_monro(1.0, 0.0)
