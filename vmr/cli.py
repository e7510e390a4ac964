"""The `vmr` command line. Every command imports its heavy machinery lazily, inside the command,
so `vmr --help` answers at once (the modules imported here import nothing heavy). Failures a
user can cause raise VmrError and end here as a one-line `error: ...`, exit status 1."""

from __future__ import annotations

import sys

import click

from vmr._version import __version__
from vmr.cli_options import MultiValueOption, csv_list as _csv_list, demo_options, engine_options
from vmr.cli_options import eval_target_options, explicit, gallery_options, new_items_options
from vmr.cli_options import transfer_options, usage_line
from vmr.errors import VmrError
from vmr.parallel import start_probe  # os, sys and time only
from vmr.extract import encoders as _encoders  # --model/--pooling help
from vmr.data import columns as _columns, formats as _formats  # --preset, --interactions help
from vmr.extract.runner import ExtractOptions

MODALITIES = ("video", "image", "text")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vmr")
def cli():
    """vmr: multimodal sequential recommendation on frozen pretrained features.

    \b
    The pipeline, one command per step:
      vmr prepare   raw interaction logs (+ item table)  -> validated dataset directory
      vmr combine   several prepared datasets            -> one dataset to train on
      vmr extract   video / image / text per item        -> HDF5 feature cache
      vmr train     cached features + sequences          -> run directory with checkpoints
      vmr eval      run directory                        -> HR@K / NDCG@K / MRR table
      vmr report    several run directories              -> Markdown table + bar chart
      vmr recommend run directory + a user or history    -> top items
      vmr gallery   run directory                        -> HTML pages of recommendations
    `vmr demo` runs all of it on a generated catalogue.
    """


# --------------------------------------------------------------------------------------- prepare
@cli.command()
@click.option("--interactions", "interactions", required=True, type=click.Path(dir_okay=False),
              help=f"Interaction log: a table ({' '.join(_formats.KINDS)}, any of them .gz) or "
                   "a sequences text file. The format comes from the extension.")
@click.option("--format", "fmt", type=click.Choice(["table", "sequences"]), default="table",
              show_default=True,
              help="'table': one interaction per row with user, item and time columns. "
                   "'sequences': one user per line, `user item item ...` already in time order.")
@click.option("--preset", type=click.Choice(list(_columns.PRESETS)), default=None,
              help="Look for the column names of MovieLens (userId, movieId, timestamp), Amazon reviews "
                   "(reviewerID, asin, unixReviewTime, overall) or RecBole (user_id, item_id, "
                   "timestamp); also picks the item text columns when --text-columns is not given.")
@click.option("--user-col", default=None,
              help="User id column [default: detected: user_id, userId, reviewerID, user].")
@click.option("--item-col", default=None,
              help="Item id column [default: detected: item_id, itemId, movieId, asin, item].")
@click.option("--time-col", default=None,
              help="Time column, numbers or ISO dates/datetimes [default: detected: timestamp, "
                   "unixReviewTime, time, ts].")
@click.option("--min-rating", type=float, default=None,
              help="Keep only interactions rated at least this (the rating column: --rating-col, "
                   "else detected: rating, overall).")
@click.option("--rating-col", default=None, help="Rating column for --min-rating.")
@click.option("--items", "items", type=click.Path(dir_okay=False), default=None,
              help="Optional item table (same formats): item id plus side columns.")
@click.option("--items-id-col", default=None,
              help="Item id column of the items table [default: the log's item column if the "
                   "table has it, else detected like --item-col].")
@click.option("--text-columns", default=None,
              help="Comma-separated item-table columns joined (in this order) into the item text.")
@click.option("--image-column", default=None,
              help="Item-table column with image file paths (relative to --media-root).")
@click.option("--video-column", default=None,
              help="Item-table column with video file paths (relative to --media-root).")
@click.option("--media-root", default=None, type=click.Path(file_okay=False),
              help="Folder every image/video path must lie in; a path outside it (../, /etc/..., "
                   "~/...) is an error [default: the items file's folder; / allows any path].")
@click.option("--kcore", default=5, show_default=True, type=click.IntRange(min=1),
              help="Keep only users and items with at least K interactions, repeated until stable.")
@click.option("--drop-unknown", is_flag=True,
              help="Drop (and count) interactions whose item is absent from the items table "
                   "instead of failing.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Dataset directory to write (interactions.parquet, items.parquet, dataset.json).")
@new_items_options
def prepare(interactions, fmt, preset, user_col, item_col, time_col, min_rating, rating_col,
            items, items_id_col, text_columns, image_column, video_column, media_root, kcore,
            drop_unknown, out, new_items, new_items_seed):
    """Turn raw interaction logs into a validated dataset directory (k-core, time order,
    leave-one-out split). Columns not named are detected from the usual names, and the summary
    says which were used. Formats, presets and detection: docs/DATA.md."""
    from vmr.data.prepare import PrepareOptions, prepare_dataset

    opts = PrepareOptions(
        interactions=interactions, fmt=fmt, user_col=user_col, item_col=item_col,
        time_col=time_col, items=items, items_id_col=items_id_col,
        text_columns=_csv_list(text_columns), image_column=image_column,
        video_column=video_column, kcore=kcore, drop_unknown=drop_unknown, out=out,
        preset=preset, min_rating=min_rating, rating_col=rating_col, media_root=media_root,
        new_items=new_items, new_items_seed=new_items_seed)
    summary = prepare_dataset(opts)
    click.echo(summary)


@cli.command()
@click.option("--data", "data", required=True, multiple=True, type=click.Path(file_okay=False),
              help="A prepared dataset (repeat: two or more); its feature cache comes along.")
@click.option("--names", "names", default=None, help="Comma-separated name "
              "per --data, prefixed to its ids as NAME/id [default: each directory's name].")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for the combined dataset and its feature cache.")
def combine(data, names, out):
    """Several prepared catalogues as one dataset and cache, ids as NAME/id (docs/DATA.md)."""
    from vmr.data.combine import combine_datasets

    click.echo(combine_datasets(list(data), out, _csv_list(names)))


# ------------------------------------------------------------------------------------------ demo
@cli.command()
@demo_options
def demo(out, n_items, n_users, n_topics, n_styles, seed, seeds, jobs, quick):
    """Generate a synthetic multimodal catalogue (videos, cover images, text) and run the whole
    pipeline on it: prepare, extract, train (all modalities, each single modality, SASRec,
    popularity; several seeds), eval, report, and check the ordering of the rows."""
    from vmr.demo import run_demo

    run_demo(out, n_items, n_users, explicit("n_topics"), seed, quick, explicit("n_styles"), seeds, jobs)


# --------------------------------------------------------------------------------------- extract
_EXTRACT = ExtractOptions(data="", modality="")       # the defaults live in the dataclass only
@cli.command()
@click.option("--data", "data", required=True, type=click.Path(file_okay=False, exists=False),
              help="Dataset directory written by `vmr prepare`.")
@click.option("--modality", required=True, type=click.Choice(MODALITIES),
              help="Which item content to encode.")
@click.option("--model", "model", default=None, help=_encoders.model_help())
@click.option("--cache", "cache", default=None, type=click.Path(dir_okay=False),
              help="HDF5 feature cache [default: DATA/features.h5].")
@click.option("--fps", default=_EXTRACT.fps, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Video: frames sampled per second.")
@click.option("--max-frames", default=_EXTRACT.max_frames, show_default=True,
              type=click.IntRange(min=1),
              help="Video: at most this many frames, evenly spread over longer videos.")
@click.option("--decoder", type=click.Choice(["auto", "pyav", "decord"]),
              default=_EXTRACT.decoder,
              show_default=True, help="Video decoder: PyAV (auto's choice where installed; "
              "skips frames nothing refers to) or decord (Linux x86-64). Same frames either way.")
@click.option("--keyframes", is_flag=True,
              help="Video, approximate and fast: the keyframe nearest each sample moment instead "
                   "of the exact frame (no decoding between keyframes; see docs/EXTRACT.md).")
@click.option("--decode-threads", default=None, type=click.IntRange(min=1),
              help="Video: decoder threads per worker [default: (CPU count - 1) / workers, at least 1].")
@click.option("--pooling", type=click.Choice(_encoders.POOLINGS), default=None,
              help=_encoders.pooling_help())
@click.option("--batch-size", default=_EXTRACT.batch_size, show_default=True,
              type=click.IntRange(min=1),
              help="Images (frames) or texts per encoder batch.")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Local decode processes [default: encoder threads - 1, at least 1; 0 = in-process].")
@click.option("--timeout", "timeout", default=_EXTRACT.timeout, show_default=True, type=float,
              help="Seconds after which a hanging decode is killed and recorded as a failure.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=_EXTRACT.dtype,
              show_default=True, help="Storage type of the cached features.")
@click.option("--device", default=_EXTRACT.device, show_default=True,
              help="'auto', 'cpu' or 'cuda[:N]'.")
@click.option("--shard", default=None, help="I/N: process only the I-th of N deterministic shards "
              "into its own shard file (merge with `vmr cache merge`).")
@click.option("--overwrite", is_flag=True,
              help="Replace a modality already cached with different encoder settings.")
@engine_options
def extract(data, modality, model, cache, fps, max_frames, pooling, batch_size, workers, timeout,
            dtype, device, shard, overwrite, decoder, keyframes, decode_threads, **engine):
    """Encode every item's video, image or text with a frozen pretrained model into the HDF5
    cache. Resumable: rerun the same command after a crash and it finishes the job."""
    from vmr.extract.runner import ExtractOptions, run_extract

    opts = ExtractOptions(
        data=data, modality=modality, model=model, cache=cache, fps=fps, max_frames=max_frames,
        pooling=pooling, batch_size=batch_size, workers=workers, timeout=timeout, dtype=dtype,
        device=device, shard=shard, overwrite=overwrite,
        decoder=decoder, keyframes=keyframes, decode_threads=decode_threads, **engine,
    )
    click.echo(run_extract(opts))


@cli.command("import-features")
@click.option("--data", "data", required=True, type=click.Path(file_okay=False),
              help="Dataset directory written by `vmr prepare`.")
@click.option("--modality", required=True, type=click.Choice(MODALITIES),
              help="Which modality these features represent.")
@click.option("--features", "features", required=True, type=click.Path(dir_okay=False),
              help="A .npy matrix, or a raw float32 matrix (e.g. UniSRec/MISSRec `.feat*` files).")
@click.option("--ids", "ids", required=True, type=click.Path(dir_okay=False),
              help="Text file, one item id per line: row k of the features is the k-th id.")
@click.option("--dim", default=None, type=click.IntRange(min=1),
              help="Feature dimension (required for raw matrices, checked for .npy).")
@click.option("--cache", "cache", default=None, type=click.Path(dir_okay=False),
              help="HDF5 feature cache [default: DATA/features.h5].")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Storage type of the cached features.")
@click.option("--overwrite", is_flag=True, help="Replace the modality if it is already cached.")
def import_features(data, modality, features, ids, dim, cache, dtype, overwrite):
    """Bring in item features computed elsewhere."""
    from vmr.extract.importer import import_features as do_import

    click.echo(do_import(data=data, modality=modality, features=features, ids=ids, dim=dim,
                         cache=cache, dtype=dtype, overwrite=overwrite))


@cli.group()
def cache():
    """Inspect and assemble feature caches."""


@cache.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--data", "data", default=None, type=click.Path(file_okay=False),
              help="Dataset whose current texts/files the rows are checked against (stale rows) "
                   "[default: the cache's folder, when it holds dataset.json].")
def cache_info(path, data):
    """Print what a cache holds: modalities, encoder, coverage, failures, and which rows are
    stale (made from content that has changed since)."""
    from vmr.extract.freshness import cache_info as info

    click.echo(info(path, data))


@cache.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The merged cache file to write.")
def cache_merge(shards, out):
    """Check that shard files agree (encoder, settings, dataset) and cover every item exactly
    once, then assemble them into one cache."""
    from vmr.cache.merge import merge_shards

    click.echo(merge_shards(list(shards), out))


# ----------------------------------------------------------------------------------------- train
@cli.command()
@click.option("--data", "data", required=True, type=click.Path(file_okay=False),
              help="Dataset directory written by `vmr prepare`.")
@click.option("--cache", "cache", default=None, type=click.Path(dir_okay=False),
              help="HDF5 feature cache [default: DATA/features.h5]. Not needed for model = sasrec.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
              help="TOML config file (unknown keys are errors); every key is listed in "
                   "docs/MODEL.md and configs/ holds examples.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, e.g. --set train.lr=0.002 (repeatable).")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Run directory [default: runs/<model kind>-<YYYYmmdd-HHMMSS>].")
@click.option("--stage", type=click.Choice(["all", "pretrain", "sequence"]), default="all",
              show_default=True, help="Which training stages to run: 'pretrain' then "
              "'sequence' on the same --out is the same as 'all'.")
@click.option("--modalities", default=None,
              help="Comma-separated subset of text,video,image to use [default: all cached].")
@click.option("--seed", default=None, type=int, help="Random seed (overrides train.seed; not "
              "with --resume).")
@click.option("--seeds", "seeds", cls=MultiValueOption, type=int,
              help="Train once per seed: `--seeds 1 2 3` writes OUT/seed-1, ... and "
                   "OUT/seeds.json (mean ± std of the best validation metrics).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint "
              "(with its config.toml; --set may change e.g. train.epochs).")
@transfer_options
def train(data, cache, config, overrides, out, stage, modalities, seed, seeds, resume, init_from, freeze):
    """Train the multimodal recommender (or the SASRec / popularity baselines) on cached
    features."""
    from vmr.allocator import keep_freed_memory
    from vmr.train.session import TrainRequest, start_training

    keep_freed_memory()
    req = TrainRequest(data=data, out=out, cache=cache, config=config, overrides=list(overrides),
                       stage=stage, modalities=_csv_list(modalities), seed=seed, resume=resume,
                       init_from=init_from, freeze=freeze)
    if seeds:
        from vmr.train.multi_seed import format_seeds, train_seeds

        runs, summary = train_seeds(req, list(seeds))
        click.echo(format_seeds(runs[0].parent, summary))
        return
    click.echo(f"run directory: {start_training(req)}")


# ------------------------------------------------------------------------------------------ eval
@cli.command("eval")
@click.option("--run", "run", required=True, type=click.Path(file_okay=False),
              help="Run directory written by `vmr train`.")
@click.option("--k", "ks", cls=MultiValueOption, type=click.IntRange(min=1),
              help="Cut-offs for HR@K and NDCG@K: `--k 5 10` or `--k 5 --k 10` [default: 5 10].")
@click.option("--split", type=click.Choice(["test", "valid"]), default="test", show_default=True,
              help="Which leave-one-out target to rank.")
@click.option("--include-history/--exclude-history", "include_history", default=None,
              help="Rank the user's past items too (RecBole), or not (S3-Rec) [default: eval.history].")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which checkpoint of the run to evaluate.")
@eval_target_options
def eval_cmd(run, ks, split, include_history, checkpoint, freq_edges, data, cache):
    """Full-ranking leave-one-out evaluation: HR@K, NDCG@K and MRR over all items."""
    from vmr.allocator import keep_freed_memory
    from vmr.evaluate.report import expand_seed_runs
    from vmr.evaluate.run_eval import evaluate_run, format_eval

    keep_freed_memory()
    ks = sorted(set(ks)) if ks else [5, 10]
    for r in expand_seed_runs([run]):       # a `train --seeds` parent: each of its seed runs
        click.echo(format_eval(r, evaluate_run(r, ks=ks, split=split,
                                               include_history=include_history,
                                               checkpoint=checkpoint, freq_edges=freq_edges,
                                               data=data, cache=cache)))


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Directory for report.md and report.png.")
@click.option("--split", type=click.Choice(["test", "valid"]), default="test", show_default=True,
              help="Which metrics_<split>.json of each run to compare.")
@click.option("--on", "on", default=None, metavar="NAME",
              help="Compare the runs' zero-shot evaluations on another dataset instead "
                   "(metrics_<split>@NAME-FP.json from `vmr eval --run RUN --data .../NAME`).")
def report(runs, out, split, on):
    """Compare evaluated runs: a table (mean ± std over seeds), a bar chart, and every group
    against the FIRST run named, user by user (ratio, 95 % interval over resampled users)."""
    from vmr.evaluate.report import write_report

    click.echo(write_report(list(runs), out=out, split=split, on=on))


# ------------------------------------------------------------------------------------- recommend
@cli.command()
@click.option("--run", "run", required=True, type=click.Path(file_okay=False),
              help="Run directory written by `vmr train`.")
@click.option("--user", "user", default=None, help="A user id of the dataset (history = all "
              "of the user's interactions).")
@click.option("--history", "history", default=None,
              help='Space-separated item ids, oldest first, e.g. "i1 i2 i3".')
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1),
              help="How many items to return.")
@click.option("--exclude-history/--include-history", default=True, show_default=True,
              help="Leave out items already in the history.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def recommend(run, user, history, top, exclude_history, fmt):
    """Recommend the next items for a known user or an ad-hoc history."""
    from vmr.serve.recommend import format_recommendations, recommend_run

    if (user is None) == (history is None):
        raise VmrError("give exactly one of --user or --history")
    click.echo(format_recommendations(recommend_run(run, user=user, history=history, top=top,
                                                    exclude_history=exclude_history), fmt))


@cli.command()
@click.option("--run", "run", required=True, type=click.Path(file_okay=False),
              help="Run directory written by `vmr train`.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for item embeddings and the user-tower model.")
@click.option("--index", "index", type=click.Choice(["exact", "faiss"]), default="exact",
              show_default=True, help="'faiss' also writes an HNSW inner-product index "
              "(needs the optional extra: pip install 'vmr[ann]').")
def export(run, out, index):
    """Write item embeddings and the user tower (also as TorchScript: docs/API.md) for serving."""
    from vmr.serve.export import export_run

    click.echo(export_run(run, out, index=index))


@cli.command()
@gallery_options
def gallery(run, users, top, out, timeout):
    """A static HTML gallery: per user the history, the held-out test item and the top
    recommendations, as image thumbnails, video frame strips or text cards."""
    from vmr.serve.gallery import format_gallery, write_gallery

    click.echo(format_gallery(write_gallery(run, out, users=users, top=top, timeout=timeout)))


def main(argv=None):
    start_probe()       # before torch loads: OpenMP's wait policy; the load over start-up
    try:
        cli.main(args=argv, prog_name="vmr", standalone_mode=False)
    except SystemExit as e:  # click exits 1 when stdout is a closed pipe (`vmr ... | head`)
        sys.exit(0 if e.code == 1 and "PacifyFlushWrapper" in type(sys.stdout).__name__ else e.code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:   # usage errors too: one line and status 1, like the rest
        click.echo(f"error: {usage_line(e)}", err=True)
        sys.exit(1)
    except VmrError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        from vmr.fsio import is_disk_full

        where = f" ({e.filename})" if e.filename else ""
        if is_disk_full(e):
            click.echo(f"error: no space left on device{where}; free space and rerun the same "
                       "command", err=True)
        elif isinstance(e, PermissionError):
            click.echo(f"error: permission denied{where}: choose a place you can write to",
                       err=True)
        else:       # a path that cannot be what it should (a file for a folder, /proc, ...)
            click.echo(f"error: {e.strerror or type(e).__name__}{where}", err=True)
        sys.exit(1)



if __name__ == "__main__":
    main()
