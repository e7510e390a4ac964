"""`vmr report`: grouping runs over seeds, mean ± std table, chart, clear errors."""

import json
import statistics
from pathlib import Path

import pytest

from vmr.errors import VmrError
from vmr.evaluate.report import write_report


def make_run(root: Path, name: str, kind: str = "sasrec", lr: float = 0.001, seed: int = 1,
             hr10: float = 0.1, ndcg10: float = 0.05, label: str | None = None,
             device: str = "cpu", metrics: bool = True, data: str = "/data/beauty") -> Path:
    """A run directory as `vmr train` + `vmr eval` leave it (without checkpoints)."""
    run = root / name
    run.mkdir()
    (run / "config.toml").write_text(
        f'[model]\nkind = "{kind}"\nd_model = 64\n\n'
        f'[train]\nlr = {lr}\nseed = {seed}\ndevice = "{device}"\n\n[data]\nmodalities = []\n')
    meta = {"model": kind, "data": data, "modalities": [], "status": "finished"}
    if label:
        meta["label"] = label
    (run / "run.json").write_text(json.dumps(meta))
    if metrics:
        (run / "metrics_test.json").write_text(json.dumps({
            "HR@5": hr10 / 2, "NDCG@5": ndcg10 / 2, "HR@10": hr10, "NDCG@10": ndcg10,
            "MRR": ndcg10 / 3, "users": 100, "items": 50}))
    return run


def table_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| run "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_groups_over_seeds_with_mean_and_std(tmp_path):
    a = [make_run(tmp_path, f"a{s}", seed=s, hr10=h, device=d)
         for s, h, d in [(1, 0.10, "cpu"), (2, 0.12, "cuda"), (3, 0.14, "cpu")]]
    b = [make_run(tmp_path, f"b{s}", lr=0.002, seed=s, hr10=h) for s, h in [(1, 0.20), (2, 0.30)]]
    p = make_run(tmp_path, "pop", kind="pop", hr10=0.05)
    out = tmp_path / "rep"
    text = write_report([str(r) for r in a + b + [p]], out=str(out), split="test")
    md = (out / "report.md").read_text()
    rows = table_rows(md)
    # labels: model kind + the config keys that differ between groups (the seed and device don't)
    assert set(rows) == {"sasrec train.lr=0.001", "sasrec train.lr=0.002", "pop train.lr=0.001"}
    header = next(ln for ln in md.splitlines() if ln.startswith("| run "))
    hr10 = [c.strip() for c in header.strip("|").split("|")][1:].index("HR@10")
    a_row, b_row = rows["sasrec train.lr=0.001"], rows["sasrec train.lr=0.002"]
    assert a_row[0] == "3" and b_row[0] == "2" and rows["pop train.lr=0.001"][0] == "1"
    hrs = [0.10, 0.12, 0.14]
    want_a = f"{statistics.mean(hrs):.4f} ± {statistics.stdev(hrs):.4f}"
    assert a_row[hr10] == want_a
    assert b_row[hr10] == f"**{0.25:.4f} ± {statistics.stdev([0.2, 0.3]):.4f}**"  # best in bold
    assert rows["pop train.lr=0.001"][hr10] == "0.0500"  # one seed: no std
    assert "sasrec train.lr=0.002" in text and "report.png" in text
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not [f for f in out.iterdir() if f.name.startswith(".")]


def test_label_from_run_json_and_collisions(tmp_path):
    r1 = make_run(tmp_path, "r1", label="vmr-causal", seed=1)
    r2 = make_run(tmp_path, "r2", label="vmr-causal", seed=2, hr10=0.2)
    r3 = make_run(tmp_path, "r3", label="vmr-causal", lr=0.01, seed=1)
    r4 = make_run(tmp_path, "r4", label="sasrec", kind="sasrec", data="/data/sports")
    write_report([str(r) for r in (r1, r2, r3, r4)], out=str(tmp_path / "o"))
    rows = table_rows((tmp_path / "o" / "report.md").read_text())
    assert set(rows) == {"vmr-causal (train.lr=0.001)", "vmr-causal (train.lr=0.01)", "sasrec"}
    assert rows["vmr-causal (train.lr=0.001)"][0] == "2"


def test_same_config_other_dataset_is_another_group(tmp_path):
    r1 = make_run(tmp_path, "r1", data="/x/beauty")
    r2 = make_run(tmp_path, "r2", data="/x/sports", seed=2)
    write_report([str(r1), str(r2), str(r1)], out=str(tmp_path / "o"))  # r1 twice counts once
    rows = table_rows((tmp_path / "o" / "report.md").read_text())
    assert set(rows) == {"sasrec data=beauty", "sasrec data=sports"}
    assert all(v[0] == "1" for v in rows.values())


def test_run_without_metrics_says_run_eval_first(tmp_path):
    ok = make_run(tmp_path, "ok")
    bad = make_run(tmp_path, "bad", metrics=False)
    with pytest.raises(VmrError, match=r"no metrics_test\.json; run `vmr eval --run .*bad"):
        write_report([str(ok), str(bad)], out=str(tmp_path / "o"))
    with pytest.raises(VmrError, match="metrics_valid.json"):
        write_report([str(ok)], out=str(tmp_path / "o"), split="valid")
    with pytest.raises(VmrError, match="not a vmr run directory"):
        write_report([str(tmp_path)], out=str(tmp_path / "o"))
    (ok / "metrics_test.json").write_text("{not json")
    with pytest.raises(VmrError, match="metrics_test.json: unreadable"):
        write_report([str(ok)], out=str(tmp_path / "o"))


def test_report_cli(tmp_path, capsys):
    from vmr.cli import main

    r1 = make_run(tmp_path, "r1", seed=1)
    r2 = make_run(tmp_path, "r2", seed=2, hr10=0.3)
    main(["report", str(r1), str(r2), "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert "| sasrec | 2 |" in out and "0.2000 ± 0.1414" in out
    assert (tmp_path / "cli" / "report.png").is_file()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "cli")])
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith("error: run directory not found")
