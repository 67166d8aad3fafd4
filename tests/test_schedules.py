"""Tests of dlbook.schedules: warm-up schedules, gradient clipping, dynamic loss scaling."""
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dlbook import schedules as sch


def test_warmup_cosine_known_values():
    f = sch.warmup_schedule(total_steps=110, warmup_steps=10, decay="cosine", min_factor=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)           # half-way: cos(pi/2) = 0
    assert f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)


def test_warmup_linear_and_constant():
    f = sch.warmup_schedule(100, 0, decay="linear")
    assert f(0) == pytest.approx(1.0) and f(50) == pytest.approx(0.5) and f(100) == 0.0
    g = sch.warmup_schedule(100, 20, decay="constant")
    assert g(9) == pytest.approx(0.5) and g(99) == 1.0


def test_lambda_lr_follows_schedule():
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.5)
    s = sch.warmup_lambda_lr(opt, total_steps=20, warmup_steps=5, decay="cosine")
    f = sch.warmup_schedule(20, 5, "cosine")
    for step in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * f(step))
        opt.step()
        s.step()


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="smaller than total_steps"):
        sch.warmup_schedule(10, 10)
    with pytest.raises(ValueError, match="decay"):
        sch.warmup_schedule(10, 2, decay="step")
    with pytest.raises(ValueError, match="min_factor"):
        sch.warmup_schedule(10, 2, min_factor=1.5)
    with pytest.raises(TypeError):
        sch.warmup_schedule(10.0, 2)
    with pytest.raises(ValueError, match="non-negative"):
        sch.warmup_schedule(10, 2)(-1)


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_matches_torch(max_norm):
    torch.manual_seed(0)
    a, b = nn.Linear(5, 7), nn.Linear(5, 7)
    b.load_state_dict(a.state_dict())
    x = torch.randn(16, 5) * 3
    for m in (a, b):
        m(x).pow(2).sum().backward()
    ours = sch.clip_grad_norm(a.parameters(), max_norm)
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), max_norm)
    torch.testing.assert_close(ours, ref)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert float(sch.grad_norm(a.parameters())) <= max_norm * (1 + 1e-5)


def test_clip_bad_input():
    w = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        sch.clip_grad_norm([w], 0.0)
    with pytest.raises(ValueError, match="positive"):
        sch.clip_grad_norm([w], math.inf)
    with pytest.raises(TypeError):
        sch.clip_grad_norm([w], "1")
    assert float(sch.clip_grad_norm([w], 1.0)) == 0.0      # no gradient: nothing to clip


def test_loss_scaler_matches_grad_scaler():
    torch.manual_seed(1)
    ours_m, ref_m = nn.Linear(3, 2), nn.Linear(3, 2)
    ref_m.load_state_dict(ours_m.state_dict())
    ours_o = torch.optim.SGD(ours_m.parameters(), lr=0.1)
    ref_o = torch.optim.SGD(ref_m.parameters(), lr=0.1)
    ours = sch.DynamicLossScaler(init_scale=2.0 ** 10, growth_interval=3)
    ref = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    x = torch.randn(4, 3)
    for step in range(12):
        for m, o, s in ((ours_m, ours_o, ours), (ref_m, ref_o, ref)):
            o.zero_grad()
            s.scale(m(x).pow(2).mean()).backward()
            if step in (2, 7):                       # an overflow
                m.weight.grad[0, 0] = float("inf")
            s.step(o)
            s.update()
        assert ours.get_scale() == ref.get_scale()
        for p, q in zip(ours_m.parameters(), ref_m.parameters()):
            torch.testing.assert_close(p, q)
    assert ours.skipped == 2


def test_loss_scaler_bad_input():
    with pytest.raises(ValueError):
        sch.DynamicLossScaler(init_scale=0)
    with pytest.raises(ValueError):
        sch.DynamicLossScaler(backoff_factor=1.0)
    with pytest.raises(RuntimeError):
        sch.DynamicLossScaler().update()


def test_saved_tensor_bytes_counts_activations_once():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64)
    with sch.SavedTensorBytes(exclude=lin.parameters()) as saved:
        lin(x).relu().sum().backward()
    # Linear saves its input x (10 x 64 floats) for dL/dW; ReLU saves its output (10 x 32).
    assert saved.bytes == 4 * (10 * 64 + 10 * 32)
    x_grad = x.clone().requires_grad_(True)
    with sch.SavedTensorBytes() as with_weight:
        lin(x_grad).relu().sum()
    # dL/dx needs W: without `exclude` the weight's storage is counted as well
    assert with_weight.bytes == saved.bytes + 4 * 64 * 32
    with sch.SavedTensorBytes(exclude=lin.parameters()) as half:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lin(x).relu().sum()
    assert half.bytes == saved.bytes // 2          # the same tensors, in 2-byte bfloat16


# --- chapter 11 (training_practice): AdamW and warm-up/cosine against torch.optim ---

NOTEBOOK = (Path(__file__).resolve().parents[1]
            / "chapters" / "11_training_practice" / "training_practice.ipynb")


def _book_adam_by_hand():
    """The notebook's own ``adam_by_hand`` (the cell that defines it, executed alone)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = [''.join(c["source"]) for c in cells if c["cell_type"] == "code"
              and ''.join(c["source"]).startswith("def adam_by_hand(")]
    assert len(source) == 1, "training_practice.ipynb must define adam_by_hand once"
    namespace = {"torch": torch}
    exec(source[0], namespace)
    return namespace["adam_by_hand"]


def _adam_torch(w, grads, cls, **kwargs):
    p = nn.Parameter(w.clone())
    opt = cls([p], **kwargs)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("lr,lam,betas,eps", [(0.1, 0.5, (0.9, 0.999), 1e-8),
                                              (1e-2, 0.01, (0.8, 0.99), 1e-6),
                                              (3e-3, 2.0, (0.9, 0.999), 1e-8)])
def test_book_adamw_matches_torch(lr, lam, betas, eps):
    """eq-ch11-adamw, w_t = w_{t-1} - η (m̂_t/(sqrt(v̂_t)+ε) + λ w_{t-1}), as written in the
    notebook, equals torch.optim.AdamW; the L2 variant equals torch.optim.Adam(weight_decay)."""
    adam_by_hand = _book_adam_by_hand()
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(8, generator=gen, dtype=torch.float64)
    scale = torch.tensor([1, 1, 10, 1, 1e-3, 1e-3, 0.0, 0.0], dtype=torch.float64)
    grads = [torch.randn(8, generator=gen, dtype=torch.float64) * scale for _ in range(7)]
    for decoupled, cls in ((True, torch.optim.AdamW), (False, torch.optim.Adam)):
        ours = adam_by_hand(w0, grads, lr=lr, lam=lam, decoupled=decoupled, betas=betas,
                            eps=eps)
        ref = _adam_torch(w0, grads, cls, lr=lr, betas=betas, eps=eps, weight_decay=lam)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # the decoupled decay alone: a weight with zero loss gradient shrinks by (1 - ηλ)^t
    zero = [torch.zeros(1, dtype=torch.float64)] * 7
    one = torch.ones(1, dtype=torch.float64)
    shrunk = adam_by_hand(one, zero, lr=lr, lam=lam, decoupled=True, betas=betas, eps=eps)
    assert shrunk.item() == pytest.approx((1 - lr * lam) ** 7, rel=1e-12)


def _lr_sequence(make_scheduler, n_steps, lr):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched, out = make_scheduler(opt), []
    for _ in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(out, dtype=torch.float64)


SCHEDULE_CASES = [(1000, 100, 0.1, 1.0), (50, 5, 0.0, 0.3), (37, 3, 0.25, 2e-3),
                  (20, 2, 0.5, 1.0)]


@pytest.mark.parametrize("T,W,m,lr", SCHEDULE_CASES)
def test_warmup_cosine_equals_sequential_lr(T, W, m, lr):
    """f of eq-ch11-warmup (cosine) equals SequentialLR(LinearLR, CosineAnnealingLR)."""
    ours = _lr_sequence(lambda o: sch.warmup_lambda_lr(o, T, W, "cosine", m), T, lr)
    ref = _lr_sequence(lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / W, end_factor=1.0,
                                          total_iters=W - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T - W, eta_min=m * lr)],
        milestones=[W]), T, lr)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9 * lr)
    assert ours[W].item() == pytest.approx(lr) and ours.max().item() == pytest.approx(lr)


@pytest.mark.parametrize("T,W,m,lr", SCHEDULE_CASES)
def test_warmup_linear_equals_sequential_lr(T, W, m, lr):
    """f of eq-ch11-warmup (linear) equals SequentialLR(LinearLR, LinearLR)."""
    lin = torch.optim.lr_scheduler.LinearLR
    ours = _lr_sequence(lambda o: sch.warmup_lambda_lr(o, T, W, "linear", m), T, lr)
    ref = _lr_sequence(lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        lin(o, start_factor=1 / W, end_factor=1.0, total_iters=W - 1),
        lin(o, start_factor=1.0, end_factor=m, total_iters=T - W)], milestones=[W]), T, lr)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9 * lr)
