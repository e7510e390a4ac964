"""`vmr demo`: the whole pipeline on a generated catalogue, each step resumable.

generate -> prepare -> extract (video, image, text) -> train (the default model on all
modalities, on each single modality, SASRec, popularity; `seeds` seeds each, `jobs` at a time)
-> eval -> report -> the ordering check (full > best single modality > SASRec > popularity, each
gap against 2 std). Rerunning the command skips finished steps and resumes interrupted ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vmr.errors import VmrError
from vmr.model.rundir import RunDir


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


# label: (modalities, --set overrides). "vmr" is `vmr train` with its defaults on every modality;
# one row per single modality; SASRec (IDs only) and popularity as the baselines.
DEMO_RUNS = {
    "vmr": (None, []),
    "vmr-video": (["video"], []),
    "vmr-image": (["image"], []),
    "vmr-text": (["text"], []),
    "sasrec": (None, ["model.kind=sasrec"]),
    "popularity": (None, ["model.kind=pop"]),
}
SINGLE = ("vmr-video", "vmr-image", "vmr-text")
METRIC = "NDCG@10"
# items need 2 interactions to stay: a long tail of rarely seen items, whose IDs a model cannot
# learn and whose content must carry them (docs/BENCHMARKS.md, "The demo over three seeds")
DEMO_KCORE = 2


def _topics(quick: bool, n_topics: int | None, n_styles: int | None) -> tuple[int, int]:
    """(topics, styles): the ones given, else the demo's (or --quick's) own; checked."""
    from vmr.data.synthetic import styles_fit

    if n_topics is None:
        n_topics = 4 if quick else 24
    if n_styles is None:
        n_styles = next((s for s in ((2,) if quick else (4,)) + (2, 0) if styles_fit(n_topics, s)))
    if not styles_fit(n_topics, n_styles):
        raise VmrError(f"--styles {n_styles} must be at least 2 and divide --topics {n_topics} "
                       "into at least 2 themes (or be 0)")
    return n_topics, n_styles


def _stamp(root: Path, params: dict) -> None:
    """Record the demo's settings in demo.json; a folder made with other settings is refused."""
    stamp = root / "demo.json"
    if stamp.exists() and json.loads(stamp.read_text()) != params:
        raise VmrError(f"{root} holds a demo made with other settings "
                       f"({stamp.read_text().strip()}); use another --out or delete it")
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(params) + "\n")


def _generate(root: Path, params: dict) -> None:
    """Step 1: the synthetic catalogue under root/raw (skipped when already there)."""
    from vmr.data.synthetic import generate_catalogue

    raw = root / "raw"
    if (raw / "items.csv").exists() and (raw / "truth.json").exists():
        _say("1/6 catalogue already generated")
        return
    n_topics, n_styles = params["topics"], params["styles"]
    views = (f", {n_styles} picture styles x {n_topics // n_styles} text themes"
             if n_styles else "")
    _say(f"1/6 generating a synthetic catalogue: {params['items']} items, {params['users']} "
         f"users, {n_topics} topics{views} (seed {params['seed']})")
    generate_catalogue(root, n_items=params["items"], n_users=params["users"], n_topics=n_topics,
                       seed=params["seed"], video_seconds=2.0 if params["quick"] else 3.0,
                       n_styles=n_styles)


def _prepare_and_extract(raw: Path, data: Path) -> None:
    """Steps 2 and 3: `vmr prepare` (skipped when done), then `vmr extract` of each modality."""
    from vmr.data.prepare import PrepareOptions, prepare_dataset

    if not (data / "dataset.json").exists():
        _say("2/6 vmr prepare")
        print(prepare_dataset(PrepareOptions(
            interactions=str(raw / "interactions.csv"), out=str(data), fmt="table",
            items=str(raw / "items.csv"), items_id_col="item_id",
            text_columns=["title", "description"], image_column="image", video_column="video",
            kcore=DEMO_KCORE)))
    else:
        _say("2/6 dataset already prepared")

    from vmr.extract.runner import ExtractOptions, run_extract

    for modality in ("video", "image", "text"):
        _say(f"3/6 vmr extract --modality {modality}")
        print(run_extract(ExtractOptions(data=str(data), modality=modality, fps=2.0, max_frames=4,
                                         pooling="mean",
                                         batch_size=32)))


def _train_rows(data: Path, runs_dir: Path, quick: bool, seeds: int, jobs: int) -> list[Path]:
    """Step 4: train every row of DEMO_RUNS with each seed; returns the run folders."""
    epochs = ["train.epochs=8", "train.patience=3"] if quick else ["train.epochs=60"]
    jobs_list = [(label, s) for s in range(1, seeds + 1) for label in DEMO_RUNS]
    _say(f"4/6 vmr train: {len(DEMO_RUNS)} rows x {seeds} seed(s), {jobs} at a time "
         f"(logs: {runs_dir}/<row>-s<seed>.log)")
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for label, s in jobs_list:
        mods, sets = DEMO_RUNS[label]
        todo.append((str(data), str(runs_dir / f"{label}-s{s}"), mods,
                     sets + epochs + [f"train.seed={s}", "train.threads=1"], label))
    _train_all(todo, jobs)
    return [Path(t[1]) for t in todo]


def _evaluate_and_report(root: Path, runs_dir: Path, run_paths: list[Path]) -> None:
    """Steps 5 and 6: evaluate each run on test, write the report with the ordering check, and
    a gallery of the first run."""
    from vmr.evaluate.report import write_report
    from vmr.evaluate.run_eval import evaluate_run, format_eval
    from vmr.serve.gallery import format_gallery, write_gallery

    _say("5/6 vmr eval --k 5 10 (test split, full ranking over all items)")
    for run_dir in run_paths:
        if RunDir(run_dir).metrics_json("test").exists():
            continue
        print(f"-- {run_dir.name}")
        print(format_eval(run_dir, evaluate_run(str(run_dir), ks=[5, 10], split="test",
                                                include_history=None, checkpoint="best")))
    _say("6/6 vmr report")
    print(write_report([str(p) for p in run_paths], out=str(root / "report"), split="test"))
    verdict = ordering(run_paths)
    print("\n" + verdict)
    with open(root / "report" / "report.md", "a", encoding="utf-8") as f:
        f.write("\n## Ordering\n\n" + verdict + "\n")
    first = run_paths[0]
    _say(f"vmr gallery --run {first} --users 6")
    gallery = write_gallery(str(first), root / "gallery", users=6, top=10)
    print(format_gallery(gallery))
    print(f"\nreport: {root / 'report' / 'report.md'}\nplot:   {root / 'report' / 'report.png'}\n"
          f"training curves: {runs_dir}/*/curves.png\ngallery: {gallery['index']}")


def run_demo(out: str, n_items: int = 1920, n_users: int = 900, n_topics: int | None = None,
             seed: int = 0, quick: bool = False, n_styles: int | None = None, seeds: int = 3,
             jobs: int = 2) -> None:
    """The demo; `n_topics` / `n_styles` None: the defaults (24 topics as 4 styles, or with
    `quick` 4 topics as 2 styles). Given ones are honoured, with `quick` too."""
    n_topics, n_styles = _topics(quick, n_topics, n_styles)
    if quick:
        n_items, n_users, seeds = min(n_items, 60), min(n_users, 240), 1
    root = Path(out)
    params = {"items": n_items, "users": n_users, "topics": n_topics, "styles": n_styles,
              "seed": seed, "quick": quick}
    _stamp(root, params)
    _generate(root, params)
    data = root / "dataset"
    _prepare_and_extract(root / "raw", data)
    runs_dir = root / "runs"
    run_paths = _train_rows(data, runs_dir, quick, seeds, jobs)
    _evaluate_and_report(root, runs_dir, run_paths)
    sys.stdout.flush()


def ordering(run_paths: list[Path]) -> str:
    """The demo's claim, checked: full > best single modality (chosen on validation) > SASRec >
    popularity on test NDCG@10, each gap against 2 sample std (of the larger-std side)."""
    import statistics

    test: dict[str, list[float]] = {}
    valid: dict[str, list[float]] = {}
    for p in run_paths:
        label = p.name.rsplit("-s", 1)[0]
        run = RunDir(p)
        test.setdefault(label, []).append(json.loads(run.metrics_json("test").read_text())[METRIC])
        bv = run.read_info().get("best_valid") or {}
        valid.setdefault(label, []).append(bv.get(METRIC, 0.0))
    best = max(SINGLE, key=lambda k: statistics.mean(valid[k]))
    chain = [("vmr (all modalities)", "vmr"), (f"best single modality ({best[4:]}, chosen on "
             "validation)", best), ("SASRec", "sasrec"), ("popularity", "popularity")]
    n = len(test["vmr"])

    def ms(k):
        xs = test[k]
        return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    lines = [f"test {METRIC}, mean ± std over {n} seed(s):"]
    for name, k in chain:
        m, sd = ms(k)
        lines.append(f"  {name:<55} {m:.4f} ± {sd:.4f}")
    ok = True
    for (a, ka), (b, kb) in zip(chain, chain[1:]):
        (ma, sa), (mb, sb) = ms(ka), ms(kb)
        gap, noise = ma - mb, 2 * max(sa, sb)
        holds = gap > noise and n > 1
        ok &= holds
        lines.append(f"  {ka} > {kb}: gap {gap:+.4f}, 2 std {noise:.4f} -> "
                     f"{'clear' if holds else ('one seed: not tested' if n == 1 else 'NOT clear')}")
    lines.append("every gap larger than 2 std: " + ("yes" if ok else "no"))
    return "\n".join(lines)


def _train_all(todo: list[tuple], jobs: int) -> None:
    """Train every (data, run dir, modalities, sets, label), `jobs` processes at a time (one
    thread each); finished runs are skipped, interrupted ones resumed."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if jobs <= 1:
        for t in todo:
            print(_train_one(*t), flush=True)
        return
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        for line in pool.map(_train_one, *zip(*todo)):
            print(line, flush=True)


def _train_one(data: str, run_dir: str, mods, sets: list[str], label: str) -> str:
    """One demo run, its output in RUN_DIR.log; returns a one-line summary."""
    import contextlib
    import time

    from vmr.model.rundir import RunDir
    from vmr.train.session import TrainRequest, start_training

    run = RunDir(run_dir)
    name = Path(run_dir).name
    if run.info.exists() and run.read_info().get("status") == "finished":
        return f"{name}: already trained"
    t0 = time.time()
    with open(f"{run_dir}.log", "a", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        start_training(TrainRequest(data=data, out=run_dir, overrides=sets, modalities=mods,
                                    resume=run.last.exists()))
    info = run.read_info()
    info["label"] = label
    run.write_info(info)
    bv = (info.get("best_valid") or {}).get(METRIC)
    return (f"{name}: best valid {METRIC} {bv:.4f} at epoch {info.get('best_epoch')}, "
            f"{time.time() - t0:.0f} s" if bv is not None else f"{name}: fitted")
