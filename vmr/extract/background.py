"""Two small helpers of the extraction loop: a generator run ahead in a background thread, and
SIGTERM turned into KeyboardInterrupt (a scheduler's preemption stops as cleanly as Ctrl-C)."""

from __future__ import annotations

import contextlib
import queue
import signal
import threading


def prefetch(gen, depth: int = 4):
    """Run a generator in a background thread, `depth` items ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    end = object()
    stop = threading.Event()

    def work():
        try:
            for x in gen:
                while not stop.is_set():
                    try:
                        q.put(("ok", x), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put(("ok", end))
        except BaseException as e:
            q.put(("err", e))

    t = threading.Thread(target=work, daemon=True, name="vmr-prefetch")
    t.start()
    try:
        while True:
            kind, x = q.get()
            if kind == "err":
                raise x
            if x is end:
                return
            yield x
    finally:
        stop.set()


@contextlib.contextmanager
def stop_on_sigterm():
    """SIGTERM (a scheduler's preemption) stops as cleanly as Ctrl-C: progress is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
