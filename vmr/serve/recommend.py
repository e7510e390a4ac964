"""`vmr recommend`: the next items for a known user or an ad-hoc history of item ids.

Scores are the dual-tower inner products <user vector, item embedding> over every item; ties
are broken by item order in the dataset so that output is deterministic.
"""

from __future__ import annotations

import json

import numpy as np

from vmr.errors import VmrError

TITLE_WIDTH = 60


def parse_history(history, item_index: dict[str, int], what: str = "--history") -> np.ndarray:
    """Item indices of a space-separated id string or a list of ids; an unknown id is an error
    naming it (`what` names the option or argument in messages)."""
    ids = history.split() if isinstance(history, str) else [str(x) for x in history]
    if not ids:
        raise VmrError(f"{what} is empty: give item ids separated by spaces, oldest first"
                       if isinstance(history, str) else f"{what} is empty: give item ids, "
                       "oldest first")
    for x in ids:
        if x not in item_index:
            raise VmrError(f"{what}: unknown item id '{x}' (not in the run's dataset)")
    return np.array([item_index[x] for x in ids], dtype=np.int64)


def user_history(dataset, user: str) -> np.ndarray:
    """All of a known user's items, oldest first."""
    try:
        u = dataset.user_ids.index(user)
    except ValueError:
        raise VmrError(f"--user: unknown user id '{user}' (not in the run's dataset)") from None
    return np.asarray(dataset.sequences[u], dtype=np.int64)


def top_items(loaded, history: np.ndarray, top: int,
              exclude_history: bool = True) -> list[tuple[int, float]]:
    """(item index, score) of the `top` best items for one history, best first."""
    import torch

    items = loaded.item_embeddings()
    user = loaded.user_vectors([history]).to(items.device, items.dtype)
    scores = (user @ items.T)[0].float().cpu()
    keep = torch.ones_like(scores, dtype=torch.bool)
    if exclude_history and len(history):
        keep[torch.from_numpy(history)] = False
    bias = getattr(loaded, "history_bias", lambda: None)()
    start = getattr(loaded, "similarity_start", lambda: None)()
    if not exclude_history and len(history) and (bias is not None or start is not None):
        from vmr.model.history import ranked_history_terms   # the repeat term

        item_bias = getattr(loaded, "item_repeat_bias", lambda: None)() if bias is not None else None
        _, cols, add = ranked_history_terms([history], bias, item_bias, user.float().cpu(),
                                            items.float().cpu(), start)
        scores[cols] += add
    candidates = torch.nonzero(keep).flatten()
    # stable sort: equal scores keep dataset order (a deterministic tie-break)
    order = torch.sort(scores[candidates], descending=True, stable=True).indices[:top]
    idx = candidates[order]
    return list(zip(idx.tolist(), scores[idx].tolist()))


def _titles(dataset, idx: list[int]) -> list[str | None]:
    items = dataset.items
    if items is None or "title" not in items.columns or not idx:
        return [None] * len(idx)
    return items["title"].gather(idx).to_list()


def terminal_safe(text) -> str:
    """`text` with every control or format character (ESC, BEL, C1 controls such as CSI, bidi
    overrides) written as a visible escape, so that a title cannot move the cursor, retitle
    the window or clear the screen of the terminal it is printed to."""
    import unicodedata

    return "".join(c if unicodedata.category(c)[0] != "C" else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in str(text))


def _short(text: str | None, width: int = TITLE_WIDTH) -> str:
    if not text:
        return ""
    text = terminal_safe(" ".join(str(text).split()))
    return text if len(text) <= width else text[:width - 1] + "…"


def format_table(rows: list[dict]) -> str:
    head = ("rank", "item", "score", "title")
    cells = [(str(r["rank"]), terminal_safe(r["item"]), f"{r['score']:.4f}", _short(r["title"]))
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]

    def line(c):
        return "  ".join([c[0].rjust(widths[0]), c[1].ljust(widths[1]), c[2].rjust(widths[2]),
                          c[3]]).rstrip()

    return "\n".join([line(head)] + [line(c) for c in cells])


def recommend_for(loaded, user: str | None = None, history=None, top: int = 10,
                  exclude_history: bool = True, what: str = "--history") -> dict:
    """The next items for a known user or a history (a space-separated string or a list of item
    ids) of an opened run: {"user", "history" (ids), "exclude_history", "items": [{"rank",
    "item", "score", "title"}, ...]} (what `vmr recommend --format json` prints)."""
    if (user is None) == (history is None):
        raise VmrError("give exactly one of --user or --history")
    ds = loaded.dataset
    hist = (user_history(ds, user) if user is not None
            else parse_history(history, ds.item_index, what))
    best = top_items(loaded, hist, top, exclude_history)
    idx = [i for i, _ in best]
    rows = [{"rank": r + 1, "item": ds.item_ids[i], "score": s, "title": t}
            for r, ((i, s), t) in enumerate(zip(best, _titles(ds, idx)))]
    return {"user": user, "history": [ds.item_ids[i] for i in hist.tolist()],
            "exclude_history": exclude_history, "items": rows}


def recommend_run(run: str, user: str | None = None, history=None, top: int = 10,
                  exclude_history: bool = True) -> dict:
    """`recommend_for` on the run directory `run` (its best checkpoint, else the last)."""
    from vmr.model.loaded import load_run

    if (user is None) == (history is None):
        raise VmrError("give exactly one of --user or --history")
    return recommend_for(load_run(run, "auto", device="cpu"), user, history, top,
                         exclude_history)


def format_recommendations(doc: dict, fmt: str = "table") -> str:
    """The output of `vmr recommend` for what `recommend_for` returned: a table or JSON."""
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, indent=2)
    rows, user = doc["items"], doc["user"]
    who = f"user {terminal_safe(user)}" if user is not None else "the given history"
    head = (f"top {len(rows)} for {who} ({len(doc['history'])} history items, "
            f"{'excluded' if doc['exclude_history'] else 'included'})")
    if not rows:
        return f"{head}\nno items left to recommend (the history covers the whole catalogue)"
    return f"{head}\n{format_table(rows)}"
