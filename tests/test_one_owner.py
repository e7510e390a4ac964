"""One owner per fact (docs/DESIGN.md, "One owner per fact"): file names and formats are written
down in one module and every other module asks it. These checks read the source."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "vmr"
REPO = PKG.parent


def constants(path: Path) -> list[str]:
    """Every string literal of a module, docstrings excepted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def modules_naming(names: set[str]) -> dict[str, set[str]]:
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        hits = names & set(constants(path))
        if hits:
            found[path.relative_to(REPO).as_posix()] = hits
    return found


def test_the_default_cache_path_has_one_owner():
    assert modules_naming({"features.h5"}) == {"vmr/cache/read.py": {"features.h5"}}


def test_only_rundir_names_a_runs_files():
    files = {"run.json", "best.pt", "checkpoint.pt", "metrics.csv", "config.toml", "pretrain.pt",
             "curves.png", "metrics_test.json", "metrics_valid.json"}
    assert set(modules_naming(files)) == {"vmr/model/rundir.py"}


def test_the_checkpoint_format_is_rundirs_constant():
    """No module writes a checkpoint's "format" as a number of its own."""
    bad = []
    for rel in ("vmr/train/trainer.py", "vmr/train/pretrain_stage.py", "vmr/train/init_from.py"):
        for node in ast.walk(ast.parse((REPO / rel).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == "format" and isinstance(
                            v, ast.Constant):
                        bad.append(f"{rel}:{node.lineno}")
    assert bad == []


def test_items_parquet_has_one_reader():
    readers = [p.relative_to(REPO).as_posix() for p in PKG.rglob("*.py")
               if "read_parquet" in p.read_text(encoding="utf-8")
               and "items.parquet" in p.read_text(encoding="utf-8")]
    assert readers == ["vmr/data/dataset.py"]


def test_the_cache_writer_reexports_no_reading_function():
    """cache/store.py imports from cache/read.py only what it uses itself (no noqa'd
    re-exports), and nobody reaches read.py's functions through store."""
    store = (PKG / "cache" / "store.py").read_text(encoding="utf-8")
    assert "noqa: F401" not in store
    read_names = {n.name for n in ast.parse((PKG / "cache" / "read.py").read_text()).body
                  if isinstance(n, (ast.FunctionDef, ast.Assign))
                  and hasattr(n, "name")} | {"FORMAT", "MODALITIES", "SETTING_KEYS"}
    bad = []
    for path in list(PKG.rglob("*.py")) + list((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "vmr.cache.store":
                bad += [f"{path.name}: {a.name}" for a in node.names if a.name in read_names]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "store" and node.attr in read_names:
                bad.append(f"{path.name}: store.{node.attr}")
    assert bad == []
