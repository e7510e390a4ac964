"""How much of the machine vmr's heavy work takes: torch's thread count and the extraction's
worker processes, for every command and the Python API.

The default takes the cores this process may use (its CPU affinity and any cgroup CPU quota)
that other processes are not keeping busy, at least one. "Busy" is measured, not guessed: the
CPU time of those cores over a window (/proc/stat) less this process's own CPU time in it, so
the window can be the start-up of the command itself (`start_probe` at the top of the command
line; nothing to wait for) or, during training, the last epoch (re-checked between epochs).
Why: torch's parallel regions split every operation into one piece per thread and wait for the
last piece; a thread that shares its core with another busy process finishes its piece a
scheduler time slice late, so beside other work two threads on two cores ran 7-9 x slower than
one (docs/BENCHMARKS.md, "Beside other work"). When other work is found at start-up, OpenMP's
idle threads are also told to sleep rather than spin (OMP_WAIT_POLICY=PASSIVE, set by the
command line before torch loads), so the time they do wait goes to whoever can use the core;
alone, OpenMP's own spin-then-sleep is kept (faster there).

Explicit settings win: `train.threads`, then the OMP_NUM_THREADS environment variable (any
command), then this policy; `--workers` and `--decode-threads` for extraction. Base layer: no
torch import at module level, nothing above vmr.errors."""

from __future__ import annotations

import math
import os
import sys
import time

WAIT_POLICY = "PASSIVE"
MARGIN = 0.35       # a core counts as free when other processes keep it busy < 65 % of the time
MIN_WINDOW_S = 0.25
PEEK_S = 0.1        # the command line's first look at the load (chooses OpenMP's wait policy)

_probe: "LoadProbe | None" = None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-6)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    """CPUs granted by a cgroup v2 (cpu.max) or v1 (cfs quota) limit, None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _cpu_jiffies(cpus: set[int] | None) -> tuple[int, int] | None:
    """(busy, total) clock ticks of the given cores (all when None) from /proc/stat."""
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *fields = line.split()
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                v = [int(x) for x in fields[:8]]    # user nice system idle iowait irq softirq steal
                total += sum(v)
                busy += sum(v) - v[3] - v[4]
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total else None


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


class LoadProbe:
    """Measures how many of this process's cores other processes keep busy, from when it was
    made (or last `restart`ed) to when `others` is called."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.cpus = _affinity()
        self.t = time.monotonic()
        self.own = time.process_time()
        self.stat = _cpu_jiffies(self.cpus)

    def others(self, min_window: float = MIN_WINDOW_S) -> float:
        """Cores' worth of CPU time other processes used in the window (>= 0). Waits until the
        window is `min_window` long. Without /proc/stat: the 1-minute load average."""
        if self.stat is None:
            try:
                return max(0.0, os.getloadavg()[0] - 1.0)      # 1: this process
            except (AttributeError, OSError):
                return 0.0
        left = min_window - (time.monotonic() - self.t)
        if left > 0:
            time.sleep(left)
        now, own, stat = time.monotonic(), time.process_time(), _cpu_jiffies(self.cpus)
        if stat is None or stat[1] <= self.stat[1]:
            return 0.0
        n = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        busy_cores = n * (stat[0] - self.stat[0]) / (stat[1] - self.stat[1])
        own_cores = (own - self.own) / max(now - self.t, 1e-9)
        return max(0.0, busy_cores - own_cores)


def choose_threads(cores: int, others: float) -> int:
    """The cores other processes leave free, counting a core free only when they use less than
    1 - MARGIN of it (too few threads costs at most the unused share of a core; too many, a
    time slice per operation); at least 1, at most `cores`."""
    return max(1, min(cores, int(cores - others + MARGIN)))


def start_probe() -> None:
    """Start measuring the load now (the command line, first thing), so the first choice of
    threads needs no extra wait; and choose OpenMP's wait policy before torch loads: when other
    processes already keep part of a core busy (PEEK_S's look), idle threads sleep (PASSIVE), so
    the time they wait goes to whoever can use the core; on an idle machine libgomp's own
    spin-then-sleep stays, which is 5-13 % faster alone (docs/BENCHMARKS.md, "Beside other
    work"). An OMP_WAIT_POLICY already set is kept."""
    global _probe
    _probe = LoadProbe()
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    if _probe.others(min_window=PEEK_S) >= MARGIN:
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY


def env_threads() -> int | None:
    """OMP_NUM_THREADS when set to a positive whole number, else None."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


def plan(setting: int = 0, probe: LoadProbe | None = None) -> dict:
    """How many threads to use: {"threads", "source" ("setting", "OMP_NUM_THREADS" or "auto"),
    "cores", and for "auto" "others_busy" (cores' worth of other processes' CPU time)}."""
    cores = usable_cores()
    if setting and setting > 0:
        return {"threads": int(setting), "source": "setting", "cores": cores}
    env = env_threads()
    if env is not None:
        return {"threads": env, "source": "OMP_NUM_THREADS", "cores": cores}
    probe = probe or _probe or LoadProbe()
    others = probe.others()
    return {"threads": choose_threads(cores, others), "source": "auto", "cores": cores,
            "others_busy": round(others, 2)}


def apply(setting: int = 0, probe: LoadProbe | None = None) -> dict:
    """`plan`, then set torch's thread count to it; returns the plan (plus the OpenMP wait
    policy in effect), which the run records."""
    import torch

    p = plan(setting, probe)
    if torch.get_num_threads() != p["threads"]:
        torch.set_num_threads(p["threads"])
    p["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
    return p


class EpochThreads:
    """Training's re-check: after each epoch, measure the other processes' load over that epoch
    and move the thread count to what `choose_threads` gives now (auto only)."""

    def __init__(self, first: dict):
        self.first = first
        self.auto = first["source"] == "auto"
        self.probe = LoadProbe()
        self.changes: list[dict] = []

    def recheck(self, epoch: int) -> int | None:
        """The new thread count after `epoch` when it changed (and set), else None."""
        if not self.auto:
            return None
        import torch

        others = self.probe.others(min_window=0.0)
        self.probe.restart()
        n = choose_threads(self.first["cores"], others)
        if n == torch.get_num_threads():
            return None
        torch.set_num_threads(n)
        self.changes.append({"after_epoch": epoch, "threads": n, "others_busy": round(others, 2)})
        return n

    def record(self) -> dict:
        return {**self.first, **({"changes": self.changes} if self.changes else {})}
