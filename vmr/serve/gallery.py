"""`vmr gallery`: a static HTML site showing what a run recommends, to look at with a browser.

    DIR/index.html        the users shown, their held-out test item and whether the top K hit it
    DIR/users/<h>.html    one page per user: the history (oldest first), the held-out test item
                          with its rank, and the top-K recommendations (the held-out item marked)
    DIR/thumbs/<h>-*.jpg  thumbnails: an item's image (center crop), a strip of a few sampled
                          frames of its video; items with neither show a text card
    DIR/gallery.json      what was shown: run, checkpoint, K, users, and their pages

Recommendations are computed as `vmr eval` ranks, from the history BEFORE the user's test item
(which is the one held out), history items excluded except the held-out item itself (it may
repeat an earlier item), so its rank and the top list always agree. An existing DIR is replaced
only when it is a gallery vmr wrote (vmr/serve/outdir.py), in one atomic swap. File names are hashes of
the opaque ids, every link is relative, and nothing is fetched from elsewhere, so the folder can
be copied anywhere and opened from disk. A small inline script sets `data-status` on <body>
("ok" when every image loaded and no error occurred) for automated checks."""

from __future__ import annotations

import hashlib
import html
import json
import os
from pathlib import Path

import numpy as np

from vmr.errors import VmrError
from vmr.serve.outdir import check_replaceable, gallery_entry, legacy_gallery, write_swapped

MANIFEST = "gallery.json"
KIND, FORMAT = "vmr gallery", 1      # gallery.json's "kind": proof that vmr wrote the folder
MAX_HISTORY = 20            # history items shown per user (the latest)
THUMB, FRAME, FRAMES = 128, 96, 4

CSS = """body{font-family:system-ui,sans-serif;margin:1.2em;background:#fafafa;color:#222}
a{color:#0645ad}h1{font-size:1.3em}h2{font-size:1.05em;margin:1.2em 0 .4em}
.row{display:flex;flex-wrap:wrap;gap:10px}
.card{width:150px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;
font-size:12px;position:relative}
.card img{display:block;max-width:100%;max-height:100px;margin:0 auto 4px}
section{margin-right:28px}
.card.target{border:3px solid #d33;padding:4px}
.badge{position:absolute;top:4px;right:4px;background:#d33;color:#fff;border-radius:3px;
padding:1px 4px;font-size:11px}
.text{background:#eef;border-radius:4px;padding:6px;height:80px;overflow:hidden;color:#334}
.id{color:#777;font-family:monospace}.score{color:#060}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"""

STATUS_SCRIPT = """<script>
(function () {
  var errors = 0;
  window.addEventListener("error", function () { errors += 1; }, true);
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    document.body.setAttribute("data-images", ok + "/" + imgs.length);
    document.body.setAttribute("data-status", errors === 0 && ok === imgs.length ? "ok" : "error");
  });
})();
</script>"""


def _h(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _key(kind: str, value: str) -> str:
    """A file name for an opaque id (ids may hold any character)."""
    return hashlib.sha256(f"{kind}\0{value}".encode("utf-8")).hexdigest()[:20]


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="generator" content="vmr gallery">\n<title>{_h(title)}</title>\n'
            f"<style>{CSS}</style>\n{STATUS_SCRIPT}\n</head>\n<body>\n{body}\n</body></html>\n")


class Thumbnails:
    """Thumbnails of items, made once each, into DIR/thumbs. Media paths are re-checked against
    the dataset's recorded media root with links resolved (`vmr.data.media.reader_paths`);
    anything but a regular file (a FIFO, a device) is never opened, and every decode runs in a
    worker process that is killed after `timeout` seconds (as `vmr extract` decodes), so no
    file can make the gallery hang. An item without a usable thumbnail gets a text card."""

    def __init__(self, dataset, folder: Path, timeout: float = 30.0):
        from vmr.data.media import reader_paths

        self.ds, self.folder, self.timeout = dataset, folder, timeout
        self.done: dict[int, list[str]] = {}
        cols = dataset.items.columns if dataset.items is not None else []
        self.col = {c: dataset.items[c].to_list() if c in cols else [None] * dataset.n_items
                    for c in ("title", "text", "image", "video")}
        for c in ("image", "video"):
            self.col[c] = reader_paths(self.col[c], dataset.path, dataset.item_ids, c,
                                       dataset.meta)

    def prefetch(self, indices) -> None:
        """Make the thumbnails of these items (decoded by one killable worker process)."""
        from vmr.extract.decode import DecodeTask
        from vmr.extract.pixels import PixelSpec
        from vmr.extract.pool import DecodePool

        tasks = []
        for i in sorted(set(int(i) for i in indices) - set(self.done)):
            self.done[i] = []
            key = _key("item", self.ds.item_ids[i])
            for kind in ("image", "video"):
                path = self.col[kind][i]
                if path and _regular(path):
                    spec = PixelSpec(THUMB, THUMB) if kind == "image" else PixelSpec(FRAME, FRAME)
                    tasks.append(((i, f"{key}-{kind}.jpg"),
                                  DecodeTask(kind, path, spec, fps=2.0, max_frames=FRAMES)))
        if not tasks:
            return
        pool = DecodePool(1, self.timeout)
        try:
            for (i, name), ok, pixels in pool.run(tasks):
                if ok and len(pixels):
                    self._save(np.concatenate(list(pixels), axis=1), name)
                    self.done[i].append(name)
        finally:
            pool.close()
        for i in self.done:
            self.done[i].sort(key=lambda n: n.endswith("-video.jpg"))   # image first

    def of(self, i: int) -> list[str]:
        """File names (in thumbs/) of item i's thumbnails: image and/or video strip."""
        if i not in self.done:
            self.prefetch([i])
        return self.done[i]

    def _save(self, pixels: np.ndarray, name: str) -> None:
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
            self.folder / name, "JPEG", quality=85)

    def card(self, i: int, extra: str = "", target: bool = False) -> str:
        item = self.ds.item_ids[i]
        title = self.col["title"][i] or ""
        text = self.col["text"][i] or ""
        media = "".join(f'<img src="../thumbs/{n}" alt="{_h(item)}">' for n in self.of(i))
        if not media:
            media = f'<div class="text">{_h(text[:240] or title or "(no content)")}</div>'
        badge = '<span class="badge">held-out next item</span>' if target else ""
        return (f'<div class="card{" target" if target else ""}">{badge}{media}'
                f'<div><b>{_h(title[:80])}</b></div><div class="id">{_h(item)}</div>'
                f"{extra}</div>")


def _regular(path: str) -> bool:
    """Whether `path` is a regular file (FIFOs, devices and sockets can block a reader)."""
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def pick_users(dataset, n: int) -> list[int]:
    """The first n users (dataset order) that have a test target."""
    users = [int(u) for u in dataset.split_users("test")[:n]]
    if not users:
        raise VmrError(f"{dataset.path}: no user has a test item (users need 2 interactions)")
    return users


def check_gallery_out(out: Path) -> None:
    """`--out` must be absent, empty, or a gallery vmr wrote (vmr/serve/outdir.py)."""
    check_replaceable(out, MANIFEST, KIND, (FORMAT,), gallery_entry, "vmr gallery",
                      legacy_gallery)


def ranked(loaded, hist: np.ndarray, target: int, top: int) -> tuple[int, list]:
    """(rank of the held-out item, the top list) by the protocol of `vmr eval`: history items
    excluded except the held-out item itself, ties counted against it -- so the rank is at most
    `top` exactly when the list shows the held-out item."""
    import torch

    items = loaded.item_embeddings()
    with torch.no_grad():
        s = (loaded.user_vectors([hist]).to(items.device, items.dtype) @ items.T)[0]
    s = s.float().cpu().numpy()
    keep = np.ones(len(s), dtype=bool)
    keep[hist] = False
    keep[target] = True
    cand = np.flatnonzero(keep)
    # best first; among equal scores the held-out item last, then dataset order
    order = cand[np.lexsort((cand, cand == target, -s[cand]))]
    rank = 1 + int(np.flatnonzero(order == target)[0])
    return rank, [(int(j), float(s[j])) for j in order[:top]]


def write_gallery(run, out: str | Path, users: int = 5, top: int = 10, loaded=None,
                  timeout: float = 30.0) -> dict:
    """Write the gallery of `users` users of a run (a run directory, or `loaded`) into `out`
    (built in a temporary sibling folder, swapped in atomically; an existing `out` must be a
    gallery vmr wrote); returns gallery.json's content plus "index" (index.html's path)."""
    from vmr.model.loaded import load_run

    if users < 1 or top < 1:
        raise VmrError("--users and --top must be at least 1")
    if not timeout > 0:
        raise VmrError(f"--timeout {timeout}: must be > 0 seconds")
    out = Path(out)
    check_gallery_out(out)
    loaded = loaded or load_run(run, "auto", device="cpu")
    ds = loaded.dataset
    chosen = pick_users(ds, users)
    test = dict(zip(ds.split_users("test").tolist(), ds.split_sequences("test")))
    shown = []
    for u in chosen:
        hist, target = test[u]
        hist = np.asarray(hist, dtype=np.int64)
        rank, best = ranked(loaded, hist, int(target), top)
        shown.append((u, hist, int(target), rank, best))
    doc = write_swapped(out, lambda tmp: _write_pages(loaded, tmp, shown, chosen, top, timeout),
                        check_gallery_out, f"cannot write the gallery in {out}", "gallery")
    return {**doc, "index": out / "index.html"}


def _write_pages(loaded, tmp: Path, shown: list, chosen: list, top: int, timeout: float) -> dict:
    ds = loaded.dataset
    (tmp / "users").mkdir()
    (tmp / "thumbs").mkdir()
    thumbs = Thumbnails(ds, tmp / "thumbs", timeout)
    thumbs.prefetch([int(i) for _, hist, target, _, best in shown
                     for i in list(hist[-MAX_HISTORY:]) + [target] + [j for j, _ in best]])
    entries = []
    for n, (u, hist, target, rank, best) in enumerate(shown):
        page = f"users/{_key('user', ds.user_ids[u])}.html"
        entries.append({"user": ds.user_ids[u], "page": page, "history": len(hist),
                        "target": ds.item_ids[target], "target_rank": rank,
                        "target_in_history": bool(np.isin(target, hist)), "hit": rank <= top})
        body = _user_body(ds, thumbs, u, hist, target, rank, best, top, chosen, n)
        (tmp / page).write_text(_page(f"vmr gallery: user {ds.user_ids[u]}", body),
                                encoding="utf-8")
    doc = {"kind": KIND, "format": FORMAT, "run": str(loaded.run_dir),
           "checkpoint": loaded.checkpoint.name, "top": top, "users": entries,
           "hits": sum(e["hit"] for e in entries)}
    (tmp / "index.html").write_text(_page("vmr gallery", _index_body(doc)), encoding="utf-8")
    (tmp / MANIFEST).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
    return doc


def _user_body(ds, thumbs: Thumbnails, u: int, hist, target: int, rank: int, best, top: int,
               chosen: list[int], n: int) -> str:
    nav = ['<a href="../index.html">all users</a>']
    if n > 0:
        nav.append(f'<a href="{_key("user", ds.user_ids[chosen[n - 1]])}.html">previous</a>')
    if n + 1 < len(chosen):
        nav.append(f'<a href="{_key("user", ds.user_ids[chosen[n + 1]])}.html">next</a>')
    shown = hist[-MAX_HISTORY:]
    earlier = (f" (the latest {len(shown)}; {len(hist) - len(shown)} earlier not shown)"
               if len(hist) > len(shown) else "")
    hits = "in the top" if rank <= top else "not in the top"
    parts = [f"<p>{' · '.join(nav)}</p>", f"<h1>user {_h(ds.user_ids[u])}</h1>",
             '<div class="row"><section>',
             f"<h2>history, oldest first: {len(hist)} items{earlier}</h2>",
             '<div class="row">' + "".join(thumbs.card(int(i)) for i in shown) + "</div>",
             "</section><section>",
             "<h2>held-out next item</h2>",
             '<div class="row">' + thumbs.card(target, f"<div>rank {rank} ({hits} {top})</div>",
                                               target=True) + "</div>",
             "</section></div>",
             f"<h2>top {len(best)} recommendations (history excluded, except the held-out "
             "item)</h2>", '<div class="row">']
    for r, (i, score) in enumerate(best):
        extra = f'<div>#{r + 1} <span class="score">score {score:.4f}</span></div>'
        parts.append(thumbs.card(int(i), extra, target=int(i) == target))
    parts.append("</div>")
    return "\n".join(parts)


def _index_body(doc: dict) -> str:
    top = doc["top"]
    rows = "".join(
        f'<tr><td><a href="{_h(e["page"])}">{_h(e["user"])}</a></td><td>{e["history"]}</td>'
        f'<td class="id">{_h(e["target"])}</td><td>{e["target_rank"]}</td>'
        f'<td>{"yes" if e["hit"] else ""}</td></tr>' for e in doc["users"])
    return (f"<h1>vmr gallery</h1><p>run <code>{_h(Path(doc['run']).name)}</code> "
            f"({_h(doc['checkpoint'])}): the top {top} for {len(doc['users'])} users, from the "
            f"history before each user's held-out test item; the held-out item is in the top "
            f"{top} for {doc['hits']} of them.</p>"
            f"<table><tr><th>user</th><th>history</th><th>held-out item</th><th>its rank</th>"
            f"<th>in top {top}</th></tr>{rows}</table>")


def format_gallery(doc: dict) -> str:
    """What `vmr gallery` prints."""
    return (f"wrote a gallery of {len(doc['users'])} users (top {doc['top']}; the held-out item "
            f"in it for {doc['hits']}): {doc['index']}")
