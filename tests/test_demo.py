"""`vmr demo --quick`: the whole pipeline on a tiny generated catalogue, end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_content_helps(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "vmr", "demo", "--quick", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "report:" in r.stdout and (out / "report" / "report.png").stat().st_size > 5000
    m = {name: json.loads((out / "runs" / name / "metrics_test.json").read_text())
         for name in ("vmr-full", "sasrec", "popularity")}
    assert m["vmr-full"]["NDCG@10"] > m["popularity"]["NDCG@10"]
    # rerunning resumes: every step is found done, nothing is retrained
    r2 = subprocess.run([sys.executable, "-m", "vmr", "demo", "--quick", "--out", str(out)],
                        capture_output=True, text=True, env=env, timeout=900)
    assert r2.returncode == 0 and "already trained" in r2.stdout
