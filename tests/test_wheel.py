"""The built wheel holds every module of vmr/ (a directory without __init__.py would be left out
by `packages = find:`, and `pip install .` would give a vmr that cannot train)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_module_is_in_the_wheel(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(REPO / "vmr", src / "vmr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("vmr-*.whl")
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "vmr").rglob("*.py")}
    assert len(modules) > 80
    assert modules - inside == set(), f"left out of the wheel: {sorted(modules - inside)}"


def test_every_package_directory_has_an_init():
    dirs = {p.parent for p in (REPO / "vmr").rglob("*.py")}
    assert [d for d in dirs if not (d / "__init__.py").exists()] == []
