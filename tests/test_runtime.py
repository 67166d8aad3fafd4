import random

import numpy as np
import pytest
import torch

import dlbook
from dlbook import runtime


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "quick")
    assert runtime.default_profile() == "quick"
    monkeypatch.delenv("DLBOOK_PROFILE")
    assert runtime.default_profile() == "full"


def test_unknown_profile_is_rejected(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        runtime.default_profile()
    with pytest.raises(ValueError, match="quick, full"):
        dlbook.start("medium", "cpu")


def test_choose_device():
    assert runtime.choose_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert runtime.choose_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime.choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            runtime.choose_device("cuda")


def test_seeding_makes_runs_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    dlbook.seed_everything(7)
    a = draw()
    dlbook.seed_everything(7)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(ValueError, match="non-negative int"):
        dlbook.seed_everything(-1)
    with pytest.raises(ValueError):
        dlbook.seed_everything(1.5)


def test_start_and_sizes():
    run = dlbook.start("quick", "cpu", 3)
    assert (run.profile, run.device.type, run.seed) == ("quick", "cpu", 3)
    assert run.size(None, quick=2, full=9) == 2
    assert run.size(5, quick=2, full=9) == 5
    assert dlbook.start("full", "cpu").size(None, quick=2, full=9) == 9
    assert dlbook.start("full", "auto", torch=False).device == "cpu"
    assert "profile=quick" in str(run)


def test_threads_from_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("DLBOOK_THREADS", "1")
        dlbook.start("quick", "cpu")
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("DLBOOK_THREADS", "zero")
        with pytest.raises(ValueError, match="DLBOOK_THREADS"):
            dlbook.start("quick", "cpu")
        monkeypatch.delenv("DLBOOK_THREADS")
        assert runtime.set_threads_from_env() is None
    finally:
        torch.set_num_threads(before)


def test_time_call_counts_and_reduces():
    calls = []
    t = runtime.time_call(lambda: calls.append(1), repeats=4, warmup=2, reduce="median")
    assert len(calls) == 6 and t >= 0.0
    import time
    slow = runtime.time_call(lambda: time.sleep(0.01), repeats=2, warmup=0)
    assert slow >= 0.009
    with pytest.raises(ValueError, match="repeats"):
        runtime.time_call(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="reduce"):
        runtime.time_call(lambda: None, reduce="max")


def test_start_switches_tf32_off():
    import torch

    from dlbook import runtime

    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    runtime.start("quick", "cpu", 0)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
