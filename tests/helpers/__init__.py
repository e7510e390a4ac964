"""What tests share: one way of running the CLI (in-process through the real entry point, or as
a real process when it must be killed), plus the data builders in `helpers.synth` (a planted
training dataset) and `helpers.media` (videos, images, tiny encoders, hand-written datasets)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PY = sys.executable
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_cli(*args) -> tuple[int, str, str]:
    """`vmr ARGS` in-process through the real entry point: (exit code, stdout, stderr)."""
    from vmr.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code or 0
    return code, out.getvalue(), err.getvalue()


def cli_one_line(*args) -> str:
    """Run `vmr ARGS`, which must fail the way a user-caused failure does: exit status 1, no
    traceback, and one `error: ...` line (progress bars may precede it). Returns that line."""
    code, _, err = run_cli(*args)
    assert code == 1, (code, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def run_process(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`vmr ARGS` as a separate process (for what must not share this process)."""
    return subprocess.run([PY, "-m", "vmr", *map(str, args)], cwd=str(REPO), env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def start_process(*args) -> subprocess.Popen:
    """`vmr ARGS` as a real process, to be signalled or killed."""
    return subprocess.Popen([PY, "-m", "vmr", *map(str, args)], cwd=str(REPO), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real small file system (tmpfs of `size`, e.g. "8m") mounted at `path` for the body;
    the test is skipped where mounting is not allowed (needs root or CAP_SYS_ADMIN)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    + (p.stderr.strip() or f"mount exited {p.returncode}"))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
