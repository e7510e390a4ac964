"""vmr/serve/outdir.py's write_swapped, the one place where `vmr export` and `vmr gallery` build
a new output folder beside the old one and swap it in: the old folder survives every failure,
no temporary folder is left behind, and an OSError is one line."""

import errno
from pathlib import Path

import pytest

from vmr.errors import VmrError
from vmr.serve.outdir import write_swapped


def old_folder(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    return out


def state(tmp_path: Path) -> dict:
    return {p.relative_to(tmp_path).as_posix(): p.read_text() if p.is_file() else None
            for p in sorted(tmp_path.rglob("*"))}


def test_the_new_folder_replaces_the_old_one(tmp_path):
    out = old_folder(tmp_path)
    checked = []

    def write(tmp):
        (tmp / "b.txt").write_text("new")
        return "written"

    assert write_swapped(out, write, checked.append, "cannot write the thing", "thing") == "written"
    assert checked == [out]
    assert state(tmp_path) == {"out": None, "out/b.txt": "new"}


def test_a_full_disk_leaves_the_old_folder_and_says_so_in_one_line(tmp_path):
    out = old_folder(tmp_path)
    before = state(tmp_path)

    def write(tmp):
        (tmp / "b.txt").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(VmrError) as e:
        write_swapped(out, write, lambda o: None, f"cannot write the thing {out}", "thing")
    assert str(e.value) == (f"cannot write the thing {out}: the disk is full (no space left on "
                            "device); a previous thing there is unchanged")
    assert state(tmp_path) == before


@pytest.mark.parametrize("error", [KeyboardInterrupt, VmrError])
def test_other_failures_propagate_unchanged_and_clean_up(tmp_path, error):
    """Ctrl-C while writing, or the second check refusing the folder: raised as they are."""
    out = old_folder(tmp_path)
    before = state(tmp_path)

    def write(tmp):
        (tmp / "b.txt").write_text("half")
        if error is KeyboardInterrupt:
            raise KeyboardInterrupt

    def recheck(o):
        raise VmrError("--out changed meanwhile")

    with pytest.raises(error):
        write_swapped(out, write, recheck, "cannot write the thing", "thing")
    assert state(tmp_path) == before


def test_no_temporary_folder_where_none_can_be_made(tmp_path):
    """The folder's parent is a file: one line, with nothing about a previous folder."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(VmrError, match=r"^cannot write the thing: [^;\n]+$"):
        write_swapped(blocker / "out", lambda tmp: None, lambda o: None, "cannot write the thing",
                      "thing")
