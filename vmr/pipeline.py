"""`vmr demo`: the whole pipeline on a generated catalogue, each step resumable.

generate -> prepare -> extract (video, image, text) -> train (full model, SASRec, popularity)
-> eval -> report. Rerunning the command skips finished steps and resumes interrupted ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vmr.errors import VmrError


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


DEMO_RUNS = {
    # label: --set overrides
    "vmr-full": ["model.kind=vmr", "pretrain.epochs=10"],
    "sasrec": ["model.kind=sasrec"],
    "popularity": ["model.kind=pop"],
}


def run_demo(out: str, n_items: int, n_users: int, n_topics: int, seed: int, quick: bool) -> None:
    from vmr.data.prepare import PrepareOptions, prepare_dataset
    from vmr.data.synthetic import generate_catalogue

    root = Path(out)
    if quick:
        n_items, n_users = min(n_items, 60), min(n_users, 240)
    params = {"items": n_items, "users": n_users, "topics": n_topics, "seed": seed, "quick": quick}
    stamp = root / "demo.json"
    if stamp.exists() and json.loads(stamp.read_text()) != params:
        raise VmrError(f"{root} holds a demo made with other settings "
                       f"({stamp.read_text().strip()}); use another --out or delete it")
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(params) + "\n")

    raw = root / "raw"
    if not (raw / "items.csv").exists() or not (raw / "truth.json").exists():
        _say(f"1/6 generating a synthetic catalogue: {n_items} items, {n_users} users, "
             f"{n_topics} topics (seed {seed})")
        generate_catalogue(root, n_items=n_items, n_users=n_users, n_topics=n_topics, seed=seed,
                           video_seconds=2.0 if quick else 3.0)
    else:
        _say("1/6 catalogue already generated")

    data = root / "dataset"
    if not (data / "dataset.json").exists():
        _say("2/6 vmr prepare")
        print(prepare_dataset(PrepareOptions(
            interactions=str(raw / "interactions.csv"), out=str(data), fmt="table",
            items=str(raw / "items.csv"), items_id_col="item_id",
            text_columns=["title", "description"], image_column="image", video_column="video",
            kcore=5)))
    else:
        _say("2/6 dataset already prepared")

    from vmr.extract.runner import ExtractOptions, run_extract

    for i, modality in enumerate(("video", "image", "text")):
        _say(f"3/6 vmr extract --modality {modality}")
        print(run_extract(ExtractOptions(data=str(data), modality=modality, fps=4.0, max_frames=8,
                                         pooling="mean",
                                         batch_size=32)))

    runs_dir = root / "runs"
    epochs = ["train.epochs=8", "train.patience=3"] if quick else ["train.epochs=60"]
    run_paths = []
    for label, sets in DEMO_RUNS.items():
        run_dir = runs_dir / label
        _say(f"4/6 vmr train ({label})")
        _train_resumable(data, run_dir, sets + epochs + [f"train.seed={seed}",
                                                         f"pretrain.epochs={2 if quick else 10}"
                                                         if label == "vmr-full" else
                                                         "pretrain.epochs=0"], label)
        run_paths.append(run_dir)

    from vmr.evaluate.report import write_report
    from vmr.evaluate.run_eval import evaluate_run, format_eval
    from vmr.serve.gallery import format_gallery, write_gallery

    _say("5/6 vmr eval --k 5 10 (test split, full ranking over all items)")
    for run_dir in run_paths:
        print(f"-- {run_dir.name}")
        print(format_eval(run_dir, evaluate_run(str(run_dir), ks=[5, 10], split="test",
                                                include_history=False, checkpoint="best")))
    _say("6/6 vmr report")
    print(write_report([str(p) for p in run_paths], out=str(root / "report"), split="test"))
    _say(f"vmr gallery --run {run_paths[0]} --users 6")
    gallery = write_gallery(str(run_paths[0]), root / "gallery", users=6, top=10)
    print(format_gallery(gallery))
    print(f"\nreport: {root / 'report' / 'report.md'}\nplot:   {root / 'report' / 'report.png'}\n"
          f"training curves: {runs_dir}/*/curves.png\ngallery: {gallery['index']}")
    sys.stdout.flush()


def _train_resumable(data: Path, run_dir: Path, sets: list[str], label: str) -> None:
    from vmr.model.rundir import RunDir
    from vmr.train.session import TrainRequest, start_training

    run = RunDir(run_dir)
    if run.info.exists() and run.read_info().get("status") == "finished":
        print(f"{run_dir} already trained")
        return
    start_training(TrainRequest(data=str(data), out=str(run_dir), overrides=sets,
                                resume=run.last.exists()))
    info = run.read_info()
    info["label"] = label
    run.write_info(info)
