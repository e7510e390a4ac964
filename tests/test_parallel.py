"""The default parallelism (vmr/parallel.py): the thread count from the cores and the other
processes' load, explicit settings winning, the load measured from /proc/stat less this
process's own CPU time, the re-check between epochs, and what runs record. Results do not
depend on the thread count."""

import json

import pytest
import torch

from helpers import run_cli
from helpers.synth import make_dataset
import vmr.parallel as parallel


@pytest.mark.parametrize("cores, others, threads", [
    (2, 0.0, 2), (2, 0.3, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 9.0, 1),
    (1, 0.0, 1), (16, 0.0, 16), (16, 1.0, 15), (16, 3.7, 12), (16, 40.0, 1)])
def test_choose_threads_leaves_the_busy_cores_alone(cores, others, threads):
    assert parallel.choose_threads(cores, others) == threads


class FakeProbe:
    def __init__(self, others):
        self.value = others
        self.restarts = 0

    def others(self, min_window=0.25):
        return self.value

    def restart(self):
        self.restarts += 1


def test_plan_setting_then_environment_then_load(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    busy = FakeProbe(2.0)
    assert parallel.plan(0, busy) == {"threads": 2, "source": "auto", "cores": 4,
                                      "others_busy": 2.0}
    assert parallel.plan(0, FakeProbe(0.0))["threads"] == 4
    assert parallel.plan(3, busy) == {"threads": 3, "source": "setting", "cores": 4}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.plan(0, busy) == {"threads": 1, "source": "OMP_NUM_THREADS", "cores": 4}
    assert parallel.plan(3, busy)["source"] == "setting"        # train.threads beats the env
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")                # not a number: ignored
    assert parallel.plan(0, busy)["source"] == "auto"


def test_usable_cores_from_affinity_and_cgroup_quota(monkeypatch):
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(parallel, "_cgroup_quota", lambda: None)
    assert parallel.usable_cores() == 4
    monkeypatch.setattr(parallel, "_cgroup_quota", lambda: 1.5)      # docker --cpus 1.5
    assert parallel.usable_cores() == 2
    monkeypatch.setattr(parallel, "_cgroup_quota", lambda: 0.2)
    assert parallel.usable_cores() == 1


def test_probe_counts_other_processes_not_its_own(monkeypatch):
    """2 cores over 1 s: 1.5 cores busy in all, 0.5 of them this process -> 1.0 others."""
    clock, own, stat = [100.0], [10.0], [(1000, 4000)]
    monkeypatch.setattr(parallel, "_affinity", lambda: {0, 1})
    monkeypatch.setattr(parallel.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(parallel.time, "process_time", lambda: own[0])
    monkeypatch.setattr(parallel, "_cpu_jiffies", lambda cpus: stat[0])
    probe = parallel.LoadProbe()
    clock[0], own[0], stat[0] = 101.0, 10.5, (1000 + 150, 4000 + 200)
    assert probe.others() == pytest.approx(1.0)
    clock[0], own[0], stat[0] = 102.0, 11.0, (1150 + 50, 4200 + 200)    # only this process
    probe.restart()
    clock[0], own[0], stat[0] = 103.0, 11.5, (1200 + 50, 4400 + 200)
    assert probe.others() == pytest.approx(0.0)


@pytest.mark.parametrize("others, preset, torch_loaded, want", [
    (0.0, None, False, None),           # idle: libgomp's own spin-then-sleep stays
    (0.3, None, False, None),           # below the margin: still idle enough
    (1.0, None, False, "PASSIVE"),      # another busy process: idle threads sleep
    (1.0, "ACTIVE", False, "ACTIVE"),   # the user's setting wins
    (1.0, None, True, None)])           # torch already loaded: too late to matter, left alone
def test_start_probe_chooses_the_wait_policy_from_the_load(monkeypatch, others, preset,
                                                           torch_loaded, want):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if preset:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    monkeypatch.setattr(parallel, "LoadProbe", lambda: FakeProbe(others))
    monkeypatch.setattr(parallel, "_probe", None)         # restored afterwards
    modules = dict(parallel.sys.modules)
    if not torch_loaded:
        modules.pop("torch", None)
    monkeypatch.setattr(parallel.sys, "modules", modules)
    parallel.start_probe()
    assert parallel.os.environ.get("OMP_WAIT_POLICY") == want
    assert isinstance(parallel._probe, FakeProbe)       # the same probe serves the first plan


def test_probe_reads_this_machines_proc_stat():
    probe = parallel.LoadProbe()
    others = probe.others(min_window=0.05)
    assert 0.0 <= others <= len(probe.cpus or [0]) + 0.5


def test_epoch_recheck_moves_the_thread_count_and_records_it(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        et = parallel.EpochThreads({"threads": 1, "source": "auto", "cores": 2,
                                    "others_busy": 1.0})
        et.probe = FakeProbe(1.0)
        assert et.recheck(1) is None                              # still busy: unchanged
        et.probe.value = 0.1                                      # the other job ended
        assert et.recheck(2) == 2 and torch.get_num_threads() == 2
        assert et.record()["changes"] == [{"after_epoch": 2, "threads": 2, "others_busy": 0.1}]
        fixed = parallel.EpochThreads({"threads": 1, "source": "setting", "cores": 2})
        fixed.probe = FakeProbe(0.0)
        assert fixed.recheck(1) is None and "changes" not in fixed.record()
    finally:
        torch.set_num_threads(before)


def _weights(run):
    return torch.load(run / "best.pt", weights_only=True)["model"]


@pytest.mark.parametrize("kind", ["vmr", "sasrec"])
def test_thread_count_changes_no_metric(tmp_path, kind):
    """The same seed at 1 and 2 threads: the same metrics and weights equal to float32 rounding
    (torch sums in another order on more threads), so a default run, whose thread count follows
    the load, trains the model a pinned run does; at the same thread count, bit for bit."""
    ds = make_dataset(tmp_path, n_users=120, dim=64)
    runs = {}
    for n, name in ((1, "a"), (2, "b"), (1, "c")):
        runs[name] = tmp_path / f"{kind}-{name}"
        code, _, err = run_cli("train", "--data", ds, "--out", runs[name], "--set",
                               f"model.kind={kind}", "--set", "train.epochs=2", "--set",
                               f"train.threads={n}", "--set", "model.d_model=64",
                               "--set", "train.device=cpu")
        assert code == 0, err
    info = {k: json.loads((r / "run.json").read_text()) for k, r in runs.items()}
    assert info["a"]["best_valid"] == info["b"]["best_valid"] == info["c"]["best_valid"]
    assert [info[k]["parallelism"]["threads"] for k in "abc"] == [1, 2, 1]
    assert info["a"]["parallelism"]["source"] == "setting"
    a, b, c = (_weights(runs[k]) for k in "abc")
    # Over the whole model, relative to its norm: Adam divides by the gradient's size, so a
    # weight whose gradient is analytically zero (the attention key bias) moves by ~lr either way
    # on rounding noise, which another summation order changes: a small tensor can differ by a
    # few per mille of its own norm. A model that trained differently differs by order 1.
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).flatten().double() for k in a]).norm()
    total = torch.cat([b[k].flatten().double() for k in a]).norm()
    per_tensor = {k: float((a[k] - b[k]).norm() / (b[k].norm() + 1e-8)) for k in a}
    assert float(diff / total) < 1e-4, sorted(per_tensor.items(), key=lambda kv: -kv[1])[:3]
    matrices = {k: v for k, v in per_tensor.items() if a[k].dim() >= 2}   # no bias among them
    assert max(matrices.values()) < 1e-3, sorted(matrices.items(), key=lambda kv: -kv[1])[:3]
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_default_run_records_its_parallelism(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    ds = make_dataset(tmp_path, n_users=40, with_features=False)
    before = torch.get_num_threads()
    try:
        code, out, err = run_cli("train", "--data", ds, "--out", tmp_path / "r", "--set",
                                 "model.kind=sasrec", "--set", "train.epochs=1", "--set",
                                 "model.d_model=16")
    finally:
        torch.set_num_threads(before)
    assert code == 0, err
    p = json.loads((tmp_path / "r" / "run.json").read_text())["parallelism"]
    assert p["source"] == "auto" and 1 <= p["threads"] <= p["cores"]
    assert p["others_busy"] >= 0
