"""What the benchmark scripts share: where the checkout is (REPO), running a `vmr` command into a
log file, and putting the checkout's vmr on sys.path for scripts that import it (`use_checkout`).
Scripts run as `python bench/NAME.py`, so this module is importable as `common`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VMR = [sys.executable, "-m", "vmr"]


def use_checkout() -> None:
    """Make `import vmr` find this checkout's vmr, whatever environment runs the script (the
    RecBole peer runs in its own venv without vmr installed)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def sh(cmd: list, log: Path, append: bool = False) -> float:
    """Run `cmd` in the repository with its output in `log`; seconds taken. A failure stops
    the script with the command and the log's path."""
    t0 = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w") as f:
        r = subprocess.run([str(c) for c in cmd], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, cmd))} (log: {log})")
    return time.time() - t0
