"""The package's import structure (docs/DESIGN.md): every module imports only from its own layer
or the layers below it, and no two modules import each other, even through a chain of lazy
(function-level) imports. Both checks read the source, so they also see imports that a test run
never executes."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vmr"

# lowest first; a module may import its own layer and those below it
LAYERS = [
    ("base", ("vmr._version", "vmr.errors", "vmr.fsio", "vmr.allocator")),
    ("data", ("vmr.data", "vmr.cache")),
    ("extract", ("vmr.extract",)),
    ("model", ("vmr.model",)),
    ("evaluate", ("vmr.evaluate",)),
    ("train", ("vmr.train",)),
    ("serve", ("vmr.serve",)),
    ("app", ("vmr.demo", "vmr.api")),
    ("cli", ("vmr.cli", "vmr.cli_options", "vmr.__main__")),
    # the package root re-exports the Python API lazily (PEP 562): it sits on top, so no module
    # of vmr may import it (the version is vmr._version's)
    ("root", ("vmr",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or (p != "vmr" and module.startswith(p + "."))) and (
                    best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """vmr modules imported anywhere in the file (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path)
    pkg = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] != "vmr":
                continue
            while n and n not in modules:     # `from vmr.x import name` -> vmr.x
                n = n.rsplit(".", 1)[0] if "." in n else ""
            if n and n != own:
                found.add(n)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for mod, deps in graph().items():
        for dep in deps:
            if layer_of(dep) > layer_of(mod):
                bad.append(f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {dep} "
                           f"({LAYERS[layer_of(dep)][0]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_checks_catch_a_violation(tmp_path, monkeypatch):
    """The checker itself: a planted upward import and a planted cycle are found."""
    fake = tmp_path / "vmr"
    (fake / "data").mkdir(parents=True)
    (fake / "train").mkdir()
    for f in ("__init__.py", "data/__init__.py", "train/__init__.py"):
        (fake / f).write_text("")
    (fake / "data" / "tables.py").write_text("def f():\n    from vmr.train.loop import x\n")
    (fake / "train" / "loop.py").write_text("from vmr.data.tables import f\nx = 1\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    with pytest.raises(AssertionError, match="vmr.data.tables \\(data\\) imports vmr.train.loop"):
        test_no_module_imports_a_layer_above_its_own()
    with pytest.raises(AssertionError, match="vmr.data.tables -> vmr.train.loop -> vmr.data.tables"):
        test_no_import_cycles()


def test_no_module_is_too_long():
    long = {module_name(f): n for f in PKG.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, f"modules over ~400 lines (split them by what they hold): {long}"


def test_bench_scripts_share_one_helper_and_import_no_circle():
    """bench/: the checkout's path and sys.path are set up in bench/common.py only, and the
    scripts that import each other (clips, decode_modes, extract) do so without a circle."""
    bench = PKG.parent / "bench"
    scripts = {p.stem: p for p in bench.glob("*.py")}
    setup = [p.name for p in scripts.values() if p.name != "common.py" and (
        "sys.path.insert" in (t := p.read_text(encoding="utf-8")) or "\nREPO = " in t)]
    assert setup == []
    g = {}
    for name, p in scripts.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                deps.add(node.module)
        g[name] = deps & set(scripts) - {name}

    def reaches(a, b, seen=()):
        return any(d == b or (d not in seen and reaches(d, b, (*seen, d))) for d in g[a])

    assert [m for m in g if reaches(m, m)] == []
    assert g["extract"] >= {"clips"} and "extract" not in g["clips"]
