"""Run the worked example of docs/API.md as it is written, in the current directory, on a small
generated log (interactions.csv: user,item,time; items.csv: item,title; four colour topics, each
user's history in one topic). Used by .ci/wheel_smoke.sh against an installed wheel.

    python .ci/api_example.py docs/API.md
"""

import random
import re
import sys
from pathlib import Path

COLOURS = ["red", "green", "blue", "gold"]


def write_log(n_users: int = 80, per_topic: int = 12, length: int = 8) -> None:
    rng = random.Random(0)
    rows = ["user,item,time"]
    for u in range(n_users):
        topic = u % len(COLOURS)
        picks = rng.sample(range(1, per_topic + 1), length)
        rows += [f"u{u},i{topic}-{i:02d},{t}" for t, i in enumerate(picks)]
    items = [f"i{t}-{i:02d},{c} {c} thing number {i}" for t, c in enumerate(COLOURS)
             for i in range(1, per_topic + 1)]
    Path("interactions.csv").write_text("\n".join(rows) + "\n")
    Path("items.csv").write_text("item,title\n" + "\n".join(items) + "\n")


def main(api_md: str) -> None:
    block = re.findall(r"```python\n(.*?)```", Path(api_md).read_text(encoding="utf-8"), re.S)[0]
    write_log()
    ns: dict = {}
    exec(compile(block, f"{api_md} (example)", "exec"), ns)
    assert ns["metrics"]["HR@10"] > 0, ns["metrics"]
    assert Path("serving/user_tower.ts").is_file() and Path(ns["index"]).is_file()
    print("API example: ok, test HR@10", round(ns["metrics"]["HR@10"], 3))


if __name__ == "__main__":
    main(sys.argv[1])
