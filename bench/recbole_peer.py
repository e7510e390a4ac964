"""The peer baseline: RecBole's SASRec, trained and tested on exactly vmr's split and protocol.

Run it with the RecBole environment (`make recbole-env`), not with vmr's:

    .venv-recbole/bin/python bench/recbole_peer.py --data DATASET_DIR --out OUT_DIR [--minutes 20]

Steps:
1. `convert`: the prepared dataset (`interactions.parquet`, `items.parquet`) becomes RecBole atomic
   files `OUT_DIR/vmr/vmr.inter` (`user_id:token item_id:token timestamp:float`, the timestamp is the
   row's 0-based position within its user, so the order is exact) and `vmr.item` (the whole item
   catalogue, so RecBole ranks the same items vmr does). Ids are written verbatim.
2. RecBole builds its dataset with every filter off and splits it by its own leave-one-out
   (`LS: valid_and_test`, order `TO`, grouped by user); `verify_split` then checks every train,
   valid and test sample (user, target item, history length) against vmr's split column.
3. SASRec trains one epoch at a time through RecBole's Trainer until `--epochs`, early stopping
   (`--patience` validations without gain) or the wall-clock cap `--minutes`, whichever comes first.
   The cap covers everything from start to the final test evaluation: an epoch only starts when
   the slowest epoch + validation + test evaluation seen so far still fit.
4. Every evaluation is scored twice from the same score matrix: by vmr's own metric code
   (`vmr.evaluate.metrics`: the user's history is excluded from the ranking, the target never)
   and by RecBole's evaluator (which, for sequential models, does NOT exclude the history). The
   best checkpoint is chosen on vmr-protocol valid NDCG@10; test is evaluated once, at the end.
5. `OUT_DIR/recbole.json` gets timings, the validation curve, test metrics, versions and config.

`convert` and `expected_samples` need only polars, so vmr's own test suite can import this file.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import common

common.use_checkout()

from vmr.errors import VmrError  # noqa: E402  (after the path fix, so the RecBole venv finds it)

DATASET_NAME = "vmr"
MAX_LEN = 50
KS = (5, 10)
# Cells pandas (RecBole's reader) turns into NaN, whereupon RecBole drops the row; "[PAD]" is
# RecBole's padding token. Ids equal to these cannot go through RecBole unchanged.
UNSAFE_IDS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "[PAD]",
})
UNSAFE_CHARS = ("\t", "\n", "\r", '"')


# ------------------------------------------------------------------------------------ conversion

@dataclass
class Conversion:
    """What `convert` wrote and the checked interactions it wrote them from."""

    inter_path: Path
    item_path: Path
    users: int
    items: int  # catalogue size (items.parquet rows)
    interactions: int
    frame: "object"  # polars DataFrame: user, item, pos, n, split (file order)


def _check_id(value: str, what: str, where: str) -> None:
    if value in UNSAFE_IDS or any(c in value for c in UNSAFE_CHARS):
        raise VmrError(f"{where}: {what} id {value!r} cannot be written to a RecBole atomic file "
                       f"(tab, newline, double quote, or a value pandas reads as missing)")


def read_interactions(data_dir: Path):
    """interactions.parquet with ids as strings, plus `pos` (0-based row position within the
    user) and `n` (the user's row count); checks vmr's leave-one-out split column against them."""
    import polars as pl

    path = data_dir / "interactions.parquet"
    if not path.is_file():
        raise VmrError(f"{path}: not found (is {data_dir} a dataset directory from `vmr prepare`?)")
    df = pl.read_parquet(path)
    missing = [c for c in ("user", "item", "time", "split") if c not in df.columns]
    if missing:
        raise VmrError(f"{path}: missing column(s) {', '.join(missing)}")
    df = df.select(pl.col("user").cast(pl.Utf8), pl.col("item").cast(pl.Utf8),
                   pl.col("time").cast(pl.Float64), pl.col("split").cast(pl.Utf8))
    for col in ("user", "item", "time", "split"):
        nulls = df[col].is_null()
        if nulls.any():
            raise VmrError(f"{path}: row {int(nulls.arg_max()) + 1} has no {col}")
    df = df.with_columns(pos=pl.int_range(pl.len()).over("user"), n=pl.len().over("user"))
    back = (pl.col("time").diff().over("user") < 0).fill_null(False)
    bad = df.select(back.arg_max().alias("row"), back.any().alias("any")).row(0)
    if bad[1]:
        row = bad[0]
        raise VmrError(f"{path}: row {row + 1} (user {df['user'][row]!r}) goes back in time; "
                       f"each user's rows must be sorted by time")
    want = (pl.when((pl.col("pos") == pl.col("n") - 1) & (pl.col("n") >= 2)).then(pl.lit("test"))
            .when((pl.col("pos") == pl.col("n") - 2) & (pl.col("n") >= 3)).then(pl.lit("valid"))
            .otherwise(pl.lit("train")))
    wrong = df.select(pl.col("split") != want).to_series()
    if wrong.any():
        row = int(wrong.arg_max())
        raise VmrError(f"{path}: row {row + 1} (user {df['user'][row]!r}) has split "
                       f"{df['split'][row]!r}, but leave-one-out by row order makes it "
                       f"{df.select(want).to_series()[row]!r}")
    return df


def convert(data_dir: str | Path, out_dir: str | Path, name: str = DATASET_NAME) -> Conversion:
    """Write `out_dir/name/name.inter` and `name.item` from a prepared dataset directory.

    Raises VmrError when RecBole's leave-one-out could not reproduce vmr's split: users with 2 or
    3 interactions (RecBole splits the augmented samples, which leaves such users without a test
    or a validation sample), or ids RecBole's pandas reader would alter or drop."""
    import polars as pl

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    df = read_interactions(data_dir)
    items_path = data_dir / "items.parquet"
    if not items_path.is_file():
        raise VmrError(f"{items_path}: not found (is {data_dir} a dataset directory from `vmr prepare`?)")
    catalogue = pl.read_parquet(items_path, columns=["item"])["item"].cast(pl.Utf8)
    if catalogue.null_count():
        raise VmrError(f"{items_path}: row {int(catalogue.is_null().arg_max()) + 1} has no item")
    if catalogue.n_unique() != len(catalogue):
        dup = catalogue.filter(catalogue.is_duplicated())[0]
        raise VmrError(f"{items_path}: item {dup!r} appears more than once")
    unknown = (df.with_row_index("row").join(pl.DataFrame({"item": catalogue}), on="item",
                                              how="anti").sort("row"))
    if len(unknown):
        raise VmrError(f"{data_dir / 'interactions.parquet'}: item {unknown['item'][0]!r} "
                       f"(user {unknown['user'][0]!r}) is not in {items_path}")

    for value in df["user"].unique(maintain_order=True):
        _check_id(value, "user", str(data_dir / "interactions.parquet"))
    for value in catalogue:
        _check_id(value, "item", str(items_path))
    short = df.filter(pl.col("n").is_in([2, 3]) & (pl.col("pos") == 0))
    if len(short):
        raise VmrError(
            f"{data_dir / 'interactions.parquet'}: {len(short)} user(s) have 2 or 3 interactions "
            f"(first: {short['user'][0]!r}); RecBole's leave-one-out splits its augmented samples "
            f"and would give them no test or no validation target, unlike vmr: prepare the dataset "
            f"with --kcore 4 or more")

    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    inter_path, item_path = folder / f"{name}.inter", folder / f"{name}.item"
    (df.select(pl.col("user").alias("user_id:token"), pl.col("item").alias("item_id:token"),
               pl.col("pos").cast(pl.Float64).alias("timestamp:float"))
       .write_csv(inter_path, separator="\t", quote_style="never"))
    pl.DataFrame({"item_id:token": catalogue}).write_csv(item_path, separator="\t",
                                                         quote_style="never")
    return Conversion(inter_path, item_path, users=df["user"].n_unique(), items=len(catalogue),
                      interactions=len(df), frame=df)


def expected_samples(frame, max_len: int = MAX_LEN) -> dict:
    """The samples vmr's split implies for a next-item model, per split: polars DataFrames with
    `user`, `item` (the target) and `hist` (history length, capped at max_len). Train samples are
    every train row but each user's first (it has no history); valid/test are vmr's rows."""
    import polars as pl

    hist = pl.min_horizontal(pl.col("pos"), pl.lit(max_len)).alias("hist")
    out = {}
    for split in ("train", "valid", "test"):
        rows = frame.filter(pl.col("split") == split)
        if split == "train":
            rows = rows.filter(pl.col("pos") > 0)
        out[split] = rows.select("user", "item", hist.cast(pl.Int64))
    return out


def histories(frame, split: str) -> dict[str, list[str]]:
    """Per user with a `split` row: the items before it (what vmr excludes from that ranking)."""
    import polars as pl

    target = frame.filter(pl.col("split") == split).select("user", cut=pl.col("pos"))
    rows = frame.join(target, on="user").filter(pl.col("pos") < pl.col("cut"))
    grouped = rows.group_by("user", maintain_order=True).agg(pl.col("item"))
    found = dict(zip(grouped["user"].to_list(), grouped["item"].to_list()))
    return {u: found.get(u, []) for u in target["user"].to_list()}


# ------------------------------------------------------------------------------------- RecBole

def sasrec_config(conv: Conversion, args: argparse.Namespace) -> dict:
    """The exact RecBole configuration (everything not given here is RecBole's default)."""
    return {
        "data_path": str(conv.inter_path.parent.parent),
        "checkpoint_dir": str(conv.inter_path.parent.parent),
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "state": "WARNING",
        # data: the converted files, nothing filtered away
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
        "rm_dup_inter": None, "val_interval": None, "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        # model
        "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
        "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE",
        # training
        "epochs": args.epochs, "train_batch_size": 256, "learner": "adam", "learning_rate": 1e-3,
        "weight_decay": 0.0, "train_neg_sample_args": None, "eval_step": 1,
        "stopping_step": args.patience,
        # evaluation: leave-one-out by time, full ranking
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO",
                      "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": list(KS), "valid_metric": "NDCG@10",
        "eval_batch_size": 4096,
    }


def _frame_from(ds, field2tokens: dict) -> "object":
    """user, item (target), hist of a built RecBole SequentialDataset, as tokens."""
    import polars as pl

    feat = ds.inter_feat
    return pl.DataFrame({
        "user": field2tokens["user_id"][feat["user_id"].numpy()].tolist(),
        "item": field2tokens["item_id"][feat["item_id"].numpy()].tolist(),
        "hist": feat["item_length"].numpy().astype("int64"),
    })


def verify_split(dataset, splits: tuple, conv: Conversion) -> dict:
    """Check RecBole's catalogue and every train/valid/test sample against vmr's split."""
    tokens = {f: dataset.field2id_token[f] for f in ("user_id", "item_id")}
    want = expected_samples(conv.frame)
    report = {"users": dataset.user_num - 1, "items": dataset.item_num - 1}
    if report["users"] != conv.users or report["items"] != conv.items:
        raise VmrError(f"RecBole sees {report['users']} users / {report['items']} items, vmr "
                       f"{conv.users} / {conv.items} (check {conv.inter_path})")
    for split, ds in zip(("train", "valid", "test"), splits):
        got = _frame_from(ds, tokens).sort("user", "item", "hist")
        exp = want[split].sort("user", "item", "hist")
        if not got.equals(exp):
            raise VmrError(f"RecBole's {split} split differs from vmr's: {len(got)} samples over "
                           f"{got['user'].n_unique()} users vs {len(exp)} over "
                           f"{exp['user'].n_unique()} (check {conv.inter_path})")
        report[f"{split}_samples"] = len(got)
        report[f"{split}_users"] = got["user"].n_unique()
    return report


class DualProtocol:
    """Wraps a Trainer's full-sort batch scorer: RecBole still scores its own way, and the same
    scores are also ranked by vmr's `ranks_from_scores` with the user's history excluded."""

    def __init__(self, trainer, dataset, frame):
        import numpy as np

        self.trainer, self.original = trainer, trainer._full_sort_batch_eval
        uid = dataset.field2token_id["user_id"]
        iid = dataset.field2token_id["item_id"]
        self.history = {}
        for split in ("valid", "test"):
            table = [np.zeros(0, dtype=np.int64)] * dataset.user_num
            for user, items in histories(frame, split).items():
                table[uid[user]] = np.array([iid[i] for i in items], dtype=np.int64)
            self.history[split] = table
        self.split, self.ranks = "valid", []
        trainer._full_sort_batch_eval = self  # an instance attribute: RecBole's code is untouched

    def __call__(self, batched_data):
        import numpy as np
        import torch
        from vmr.evaluate.metrics import ranks_from_scores

        interaction, scores, positive_u, positive_i = self.original(batched_data)
        table = self.history[self.split]
        hist = [table[u] for u in interaction["user_id"].cpu().numpy()]
        rows = np.repeat(np.arange(len(hist)), [len(h) for h in hist])
        cols = np.concatenate(hist) if len(rows) else np.zeros(0, dtype=np.int64)
        exclude = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        exclude[torch.as_tensor(rows, device=scores.device),
                torch.as_tensor(cols, device=scores.device)] = True
        exclude[:, 0] = True  # RecBole's padding item
        self.ranks.append(ranks_from_scores(scores, positive_i, exclude).cpu())
        return interaction, scores, positive_u, positive_i

    def evaluate(self, split: str, data, **kwargs) -> tuple[dict, dict, float]:
        """(vmr-protocol metrics, RecBole's own metrics, seconds) for one full-ranking pass."""
        import torch
        from vmr.evaluate.metrics import metrics_from_ranks

        self.split, self.ranks = split, []
        t0 = time.time()
        native = self.trainer.evaluate(data, show_progress=False, **kwargs)
        seconds = time.time() - t0
        ranks = torch.cat(self.ranks)
        vmr = metrics_from_ranks(ranks, KS)
        vmr["users"] = int(len(ranks))
        return vmr, {k: float(v) for k, v in native.items()}, seconds


def run(args: argparse.Namespace) -> dict:
    t_start = time.time()
    deadline = t_start + args.minutes * 60
    data, out = Path(args.data).resolve(), Path(args.out).resolve()  # before the chdir below
    out.mkdir(parents=True, exist_ok=True)
    conv = convert(data, out)
    print(f"converted {conv.interactions} interactions, {conv.users} users, {conv.items} items "
          f"-> {conv.inter_path}", flush=True)

    # RecBole 1.2.1 trips pandas' and torch's deprecation notices; they say nothing about this run.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    import numpy
    import pandas
    import polars
    import recbole

    # RecBole's Config aliases numpy names that numpy 2 removed; give it them where they are gone.
    for old, new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
        if not hasattr(numpy, old):
            setattr(numpy, old, getattr(numpy, new))
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # RecBole saves whole Config objects in its checkpoints; torch >= 2.6 refuses to unpickle
    # them by default. Only this process is patched, never RecBole's files.
    torch.load = functools.partial(torch.load, weights_only=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(out)  # RecBole writes log_tensorboard/ into the working directory

    cfg = sasrec_config(conv, args)
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config would read `--key=value` args too
    try:
        config = Config(model="SASRec", dataset=DATASET_NAME, config_dict=cfg)
    finally:
        sys.argv = argv
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    split = verify_split(dataset, (train_data._dataset, valid_data._dataset, test_data._dataset),
                         conv)
    print(f"split verified: {split}", flush=True)

    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    trainer.eval_collector.data_collect(train_data)
    scorer = DualProtocol(trainer, dataset, conv.frame)
    best_path = out / "sasrec_best.pth"
    show = sys.stderr.isatty()
    t_ready = time.time()

    curve, best, best_epoch, stale, stopped = [], -1.0, -1, 0, "max_epochs"
    for epoch in range(args.epochs):
        if curve:
            need = (max(c["train_s"] for c in curve) + 2 * max(c["eval_s"] for c in curve))
            if time.time() + need > deadline:
                stopped = "time_cap"
                break
        t0 = time.time()
        loss = trainer._train_epoch(train_data, epoch, show_progress=show)
        train_s = time.time() - t0
        valid, native, eval_s = scorer.evaluate("valid", valid_data, load_best_model=False)
        improved = valid["NDCG@10"] > best
        if improved:
            best, best_epoch, stale = valid["NDCG@10"], epoch, 0
            trainer._save_checkpoint(epoch, verbose=False, saved_model_file=str(best_path))
        else:
            stale += 1
        curve.append({"epoch": epoch, "loss": float(loss), "train_s": round(train_s, 3),
                      "eval_s": round(eval_s, 3), "elapsed_s": round(time.time() - t_start, 1),
                      "valid": valid, "valid_recbole": native})
        print(f"epoch {epoch:3d}  loss {loss:10.2f}  train {train_s:6.1f}s  eval {eval_s:5.1f}s  "
              f"valid NDCG@10 {valid['NDCG@10']:.4f}  HR@10 {valid['HR@10']:.4f}"
              f"{'  *' if improved else ''}", flush=True)
        if stale >= args.patience:
            stopped = "early_stop"
            break

    if best_epoch < 0:
        raise VmrError("no epoch gave a finite validation NDCG@10 (training diverged?); "
                       "see the curve in the log above")
    test, test_native, test_s = scorer.evaluate("test", test_data, load_best_model=True,
                                                model_file=str(best_path))
    elapsed = time.time() - t_start
    return {
        "model": "RecBole SASRec",
        "out": str(out),
        "data": str(data),
        "dataset_sha256": _dataset_sha(data),
        "cap_minutes": args.minutes,
        "stopped": stopped,
        "epochs_run": len(curve),
        "best_epoch": best_epoch,
        "elapsed_s": round(elapsed, 1),
        "over_cap_s": round(max(0.0, elapsed - args.minutes * 60), 1),
        "setup_s": round(t_ready - t_start, 1),
        "s_per_epoch": round(sum(c["train_s"] for c in curve) / len(curve), 3),
        "s_per_eval": round(sum(c["eval_s"] for c in curve) / len(curve), 3),
        "test_eval_s": round(test_s, 3),
        "protocol": {
            "split": "vmr's leave-one-out (verified sample by sample)",
            "vmr": "vmr.evaluate.metrics over all items; the user's history excluded, the target never",
            "recbole": "RecBole's evaluator; for sequential models it does not exclude the history; "
                       "its MRR is cut at top-k",
            "selection": "best checkpoint by vmr-protocol valid NDCG@10",
        },
        "split": split,
        "best_valid": curve[best_epoch]["valid"] if best_epoch >= 0 else None,
        "test": test,
        "test_recbole": test_native,
        "curve": curve,
        "config": cfg,
        "recbole_config": {k: config.final_config_dict[k] for k in sorted(config.final_config_dict)},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "recbole": recbole.__version__, "numpy": numpy.__version__,
                     "pandas": pandas.__version__, "polars": polars.__version__},
        "device": str(config["device"]) + ("" if torch.cuda.is_available() else
                                           f" ({torch.get_num_threads()} threads)"),
        "seed": args.seed,
    }


def _dataset_sha(data_dir: Path) -> str | None:
    try:
        return json.loads((data_dir / "dataset.json").read_text()).get("inputs_sha256")
    except (OSError, ValueError):
        return None


def summary(result: dict) -> str:
    t, n = result["test"], result["test_recbole"]
    return "\n".join([
        f"RecBole SASRec on {result['data']} ({result['device']})",
        f"  stopped: {result['stopped']} after {result['epochs_run']} epochs, "
        f"{result['elapsed_s']:.0f}s of a {result['cap_minutes']:g}-minute cap; best epoch "
        f"{result['best_epoch']}",
        f"  {result['s_per_epoch']:.1f} s/epoch, {result['s_per_eval']:.1f} s/eval "
        f"(test eval {result['test_eval_s']:.1f}s)",
        "  test (vmr protocol, history excluded): " + "  ".join(
            f"{k} {t[k]:.4f}" for k in ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")),
        "  test (RecBole's evaluator):            " + "  ".join(
            f"{k} {v:.4f}" for k, v in n.items()),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset directory written by `vmr prepare`")
    p.add_argument("--out", required=True, help="output directory (recbole.json, RecBole files)")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock cap (default 20)")
    p.add_argument("--epochs", type=int, default=200, help="most epochs (default 200)")
    p.add_argument("--patience", type=int, default=10,
                   help="stop after this many validations without gain (default 10)")
    p.add_argument("--seed", type=int, default=2020, help="random seed (default 2020)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest on a "
                        "busy shared machine)")
    args = p.parse_args(argv)
    for name in ("minutes", "epochs", "patience", "threads"):
        if getattr(args, name) <= 0 and not (name == "threads" and args.threads == 0):
            p.error(f"--{name} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except VmrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = Path(result["out"]) / "recbole.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(summary(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
