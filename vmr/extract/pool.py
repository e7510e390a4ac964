"""Decode worker processes with a per-item timeout.

Each worker is a separate process (it opens its own files) that decodes one task at a time. A
dispatcher thread in the main process feeds idle workers, collects results into a bounded queue
(so at most a few items' pixels are in memory, however long the item list), and kills a worker
whose task runs past the timeout -- decoders can hang in native code where no Python exception
reaches them -- recording that item as a failure and starting a fresh worker. The encoder
consumes results in completion order while the workers keep decoding ahead of it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from vmr.errors import VmrError

_DONE = object()


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (even by SIGKILL)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn, quiet: bool) -> None:
    """Worker process: decode tasks from `conn` until told to stop or the parent goes away."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    _die_with_parent()
    if quiet:  # native decoders print warnings straight to fd 2; keep the progress bar clean
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    import cv2

    cv2.setNumThreads(1)
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        ok, payload = decode_one(task)
        msg = ("ok" if ok else "fail", payload)
        try:
            conn.send(msg)
        except (BrokenPipeError, OSError):
            return


def decode_one(task) -> tuple[bool, Any]:
    """(True, pixels) or (False, the reason this item failed): every decoder error, expected or
    not, is the item's failure (used by the worker processes here and by the Ray engine)."""
    from vmr.extract.decode import DecodeFailure, run_task

    try:
        return True, run_task(task)
    except DecodeFailure as e:
        return False, str(e)
    except MemoryError:
        return False, "out of memory while decoding"
    except Exception as e:  # an unexpected decoder error is still this item's failure
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


class _Budget:
    """Results handed to the consumer but not taken yet: counted, so decoding runs ahead of the
    encoder by a bounded amount of memory, whatever the number of items."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items, self.max_bytes = max_items, max_bytes
        self.items = self.bytes = 0
        self.lock = threading.Lock()

    @staticmethod
    def _size(payload) -> int:
        return int(getattr(payload, "nbytes", 0))

    def add(self, payload) -> None:
        with self.lock:
            self.items += 1
            self.bytes += self._size(payload)

    def take(self, payload) -> None:
        with self.lock:
            self.items -= 1
            self.bytes -= self._size(payload)

    def room(self, in_flight: int) -> bool:
        with self.lock:
            return self.items + in_flight < self.max_items and self.bytes < self.max_bytes


@dataclass
class _Worker:
    proc: Any
    conn: Any
    ready: bool = False
    key: Any = None
    busy: bool = False
    started: float = 0.0


class DecodePool:
    """`run(tasks)` yields (key, ok, payload) per (key, task): payload is the decoded array when
    ok, else the failure reason. With workers=0 tasks run in the calling thread (no timeout)."""

    def __init__(self, workers: int, timeout: float, quiet: bool = True):
        self.n = workers
        self.timeout = timeout
        self.quiet = quiet
        self._ctx = None
        self._workers: list[_Worker] = []
        self._failed_starts = 0  # workers that died before they were ready, in this run
        if workers > 0:
            import multiprocessing as mp

            # spawn, not fork: the parent holds torch thread pools and CUDA state
            self._ctx = mp.get_context("spawn")
            self._workers = [self._start() for _ in range(workers)]

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=_worker_main, args=(child, self.quiet), daemon=True)
        p.start()
        child.close()
        return _Worker(proc=p, conn=parent)

    def _kill(self, w: _Worker) -> None:
        try:
            w.proc.kill()
            w.proc.join(5)
        except Exception:
            pass
        try:
            w.conn.close()
        except OSError:
            pass

    def close(self) -> None:
        """Stop every worker (idle ones politely, busy ones by force)."""
        for w in self._workers:
            if not w.busy and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            if not w.busy:
                w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                self._kill(w)
            else:
                try:
                    w.conn.close()
                except OSError:
                    pass
        self._workers = []

    def run(self, tasks: Iterable[tuple[Any, Any]], max_items: int | None = None,
            max_bytes: int = 256 << 20) -> Iterator[tuple[Any, bool, Any]]:
        """Decode `tasks` ahead of the consumer, holding at most `max_items` results (and about
        `max_bytes` of pixels) that the consumer has not taken yet."""
        if self.n == 0:
            yield from self._run_inline(tasks)
            return
        out: queue.Queue = queue.Queue()
        budget = _Budget(max_items or 2 * self.n + 2, max_bytes)
        stop = threading.Event()
        t = threading.Thread(target=self._dispatch, args=(iter(tasks), out, stop, budget),
                             daemon=True, name="vmr-decode-dispatch")
        t.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    break
                if isinstance(item, tuple) and item and item[0] is _DONE:
                    raise item[1]  # the dispatcher crashed: surface its exception
                budget.take(item[2])
                yield item
        finally:
            stop.set()
            t.join()

    def _run_inline(self, tasks):
        from vmr.extract.decode import DecodeFailure, run_task

        for key, task in tasks:
            try:
                yield key, True, run_task(task)
            except DecodeFailure as e:
                yield key, False, str(e)

    def _dispatch(self, tasks: Iterator, out: queue.Queue, stop: threading.Event,
                  budget: "_Budget") -> None:
        """The dispatcher thread: feed idle workers, hand results to `out`, replace workers that
        die or run past the timeout; ends with _DONE (or (_DONE, exception))."""
        from multiprocessing.connection import wait

        def emit(item) -> bool:
            if stop.is_set():
                return False
            if item is not _DONE and item[0] is not _DONE:
                budget.add(item[2])
            out.put(item)
            return True

        try:
            exhausted = False
            self._failed_starts = 0
            while not stop.is_set():
                throttled = False
                if not exhausted:
                    exhausted, throttled = self._feed(tasks, budget)
                busy = [w for w in self._workers if w.busy]
                if exhausted and not busy:
                    break
                now = time.monotonic()
                wait_s = 0.005 if throttled else 0.2
                if busy:
                    first = min(w.started for w in busy)
                    wait_s = min(wait_s, max(0.0, first + self.timeout - now))
                ready = set(wait([w.conn for w in self._workers], timeout=wait_s))
                if not self._collect(ready, emit):
                    return
            emit(_DONE)
        except BaseException as e:  # a bug here must not hang the consumer
            emit((_DONE, e))

    def _feed(self, tasks: Iterator, budget: "_Budget") -> tuple[bool, bool]:
        """Send the next tasks to idle workers while the budget allows: (tasks exhausted,
        throttled by the budget)."""
        for w in self._workers:
            if w.ready and not w.busy:
                if not budget.room(sum(x.busy for x in self._workers)):
                    return False, True
                nxt = next(tasks, None)
                if nxt is None:
                    return True, False
                w.key, task = nxt
                w.busy, w.started = True, time.monotonic()
                try:
                    w.conn.send(task)
                except (BrokenPipeError, OSError):
                    pass  # dead worker: noticed below as EOF
        return False, False

    def _collect(self, ready: set, emit) -> bool:
        """Handle each worker's message, or its timeout; False once the consumer has stopped."""
        for i, w in enumerate(list(self._workers)):
            if w.conn in ready:
                if not self._receive(i, w, emit):
                    return False
            elif w.busy and time.monotonic() - w.started > self.timeout:
                self._kill(w)
                self._workers[i] = self._start()
                if not emit((w.key, False, f"timed out after {self.timeout:g} s")):
                    return False
        return True

    def _receive(self, i: int, w: _Worker, emit) -> bool:
        """One message of worker i (ready, a result, or its death); False once the consumer has
        stopped."""
        try:
            kind, payload = w.conn.recv()
        except (EOFError, OSError):
            self._kill(w)
            code = w.proc.exitcode
            if not w.ready:
                self._failed_starts += 1
                if self._failed_starts >= 3:
                    raise VmrError("decode worker processes die while starting "
                                   f"(exit code {code}); try --workers 0")
            self._workers[i] = self._start()
            return not w.busy or emit((w.key, False, f"decoder process died (exit code {code})"))
        if kind == "ready":
            w.ready = True
            return True
        key, w.key, w.busy = w.key, None, False
        return emit((key, kind == "ok", payload))


def default_decode_threads(workers: int) -> int:
    """Decoder threads per video worker: the cores left after one for the encoder, shared out
    among the workers; 1 at the default worker count (CPU count - 1) and for in-process decoding.
    Threads make one video decode sooner, not more videos per core (docs/BENCHMARKS.md)."""
    if workers < 1:
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 2
    return max(1, (n - 1) // workers)
