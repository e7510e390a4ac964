"""Small real runs for evaluation and serving tests: a dataset with string ids and titles
("7" and "007" are different items), a popularity run and a 2-epoch SASRec run."""

import random
from pathlib import Path

from helpers import run_cli

ITEMS = ["7", "007", "x-1"] + [f"i{k:02d}" for k in range(22)]  # "7" and "007" differ


def build_runs(root: Path) -> dict[str, Path]:
    """A small dataset with string ids and titles, a popularity run, and a 2-epoch SASRec run."""
    rng = random.Random(0)
    rows = ["user,item,time"]
    for u in range(45):
        n = rng.randint(4, 9)
        # users drift through the catalogue so that the sequence model has something to learn
        start = rng.randrange(len(ITEMS))
        seq = [ITEMS[(start + 2 * j + rng.randint(0, 1)) % len(ITEMS)] for j in range(n)]
        rows += [f"u{u:03d},{it},{t}" for t, it in enumerate(seq)]
    (root / "inter.csv").write_text("\n".join(rows) + "\n")
    titles = ["item,title"] + [f"{it},Title of {it}" if it != "x-1" else f"{it}," for it in ITEMS]
    (root / "items.csv").write_text("\n".join(titles) + "\n")
    ds, pop, sas = root / "ds", root / "run_pop", root / "run_sas"
    for args in (
        ["prepare", "--interactions", str(root / "inter.csv"), "--items", str(root / "items.csv"),
         "--text-columns", "title", "--kcore", "1", "--out", str(ds)],
        ["train", "--data", str(ds), "--set", "model.kind=pop", "--out", str(pop)],
        ["train", "--data", str(ds), "--set", "model.kind=sasrec", "--set", "train.epochs=2",
         "--set", "model.d_model=16", "--set", "train.device=cpu", "--out", str(sas)],
    ):
        code, _, err = run_cli(*args)
        assert code == 0, f"vmr {' '.join(args)} failed: {err}"
    return {"data": ds, "pop": pop, "sasrec": sas}
