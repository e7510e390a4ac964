"""Functions a person reads at once: none in vmr/ over 60 lines. WAITING may list a long function
waiting to be split (issue 21 emptied it); an entry may only shrink. A new long function, or a
listed one that grows, fails here."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "vmr"
LIMIT = 60
# module:function -> lines today; lower the number (or delete the entry) when one is split
WAITING: dict[str, int] = {}


def function_lengths() -> dict[str, int]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{rel}:{node.name}"] = max(out.get(f"{rel}:{node.name}", 0),
                                                node.end_lineno - node.lineno + 1)
    return out


def test_no_function_is_longer_than_it_was():
    lengths = function_lengths()
    bad = {k: n for k, n in lengths.items() if n > max(LIMIT, WAITING.get(k, 0))}
    assert bad == {}, f"functions over {LIMIT} lines (split them): {bad}"


def test_the_waiting_list_is_current():
    """An entry whose function was split (or renamed) is removed, so the list only shrinks."""
    lengths = function_lengths()
    stale = {k: (n, lengths.get(k)) for k, n in WAITING.items() if lengths.get(k, 0) <= LIMIT}
    assert stale == {}
