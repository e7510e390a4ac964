"""`vmr demo --quick`: the whole pipeline on a tiny generated catalogue, end to end."""

import json

import pytest

from helpers import run_process


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_content_helps(tmp_path):
    out = tmp_path / "demo"
    r = run_process("demo", "--quick", "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "report:" in r.stdout and (out / "report" / "report.png").stat().st_size > 5000
    m = {name: json.loads((out / "runs" / f"{name}-s1" / "metrics_test.json").read_text())
         for name in ("vmr", "vmr-video", "vmr-image", "vmr-text", "sasrec", "popularity")}
    assert m["vmr"]["NDCG@10"] > m["popularity"]["NDCG@10"]
    # the ordering check is printed and appended to the report; one seed cannot test margins
    md = (out / "report" / "report.md").read_text()
    assert "## Ordering" in md and "one seed: not tested" in md and "best single modality" in md
    assert "every gap larger than 2 std: no" in r.stdout
    # rerunning resumes: every step is found done, nothing is retrained
    r2 = run_process("demo", "--quick", "--out", out, timeout=900)
    assert r2.returncode == 0 and "already trained" in r2.stdout
