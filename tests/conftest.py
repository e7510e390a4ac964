import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VMR_SHARED", REPO.parent / "shared"))
BEAUTY = SHARED / "data" / "amazon_beauty"


@pytest.fixture
def beauty_dir():
    if not (BEAUTY / "Beauty.txt").exists():
        pytest.skip(f"Amazon Beauty data not found at {BEAUTY} (set VMR_SHARED to the shared folder)")
    return BEAUTY
