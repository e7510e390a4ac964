"""Generic click helpers the `vmr` commands share (the cli layer; imports nothing heavy)."""

from __future__ import annotations

from functools import partial

import click


class MultiValueOption(click.Option):
    """An option that takes one or more values: `--k 5 10` as well as `--k 5 --k 10`.

    Click rejects nargs=-1 on options, so this option consumes the following non-option tokens
    itself."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self._previous_parser_process = None
        self._eat_all_parser = None

    def add_to_parser(self, parser, ctx):
        def parser_process(value, state):
            values = [value]
            while state.rargs and not state.rargs[0].startswith("-"):
                values.append(state.rargs.pop(0))
            for v in values:
                self._previous_parser_process(v, state)

        retval = super().add_to_parser(parser, ctx)
        for name in self.opts:
            our_parser = parser._long_opt.get(name) or parser._short_opt.get(name)
            if our_parser:
                self._eat_all_parser = our_parser
                self._previous_parser_process = our_parser.process
                our_parser.process = parser_process
                break
        return retval


def csv_list(value: str | None) -> list[str] | None:
    """`a, b,c` -> ["a", "b", "c"]; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


# Options of the cold-start and transfer features, grouped so that cli.py stays short.
def new_items_options(f):
    """`vmr prepare --new-items FRACTION [--new-items-seed S]`."""
    f = click.option("--new-items-seed", "new_items_seed", default=0, show_default=True, type=int,
                     help="Seed of the --new-items draw (same seed and items: same new items).")(f)
    return click.option("--new-items", "new_items", default=0.0, type=float, metavar="FRACTION",
                        help="Strict new-item protocol: mark this random share of the catalogue as "
                             "new; none of their interactions is trained on, they are evaluated "
                             "as targets among all items (docs/EVALUATION.md).")(f)


def transfer_options(f):
    """`vmr train --init-from RUN_DIR [--freeze]`."""
    f = click.option("--freeze", is_flag=True,
                     help="With --init-from: keep the content encoder (projections, fusion "
                          "blocks) fixed.")(f)
    return click.option("--init-from", "init_from", default=None, type=click.Path(file_okay=False),
                        help="Start from a run trained on another catalogue with the same feature "
                             "encoders: every weight but the item IDs (its config is the "
                             "default; docs/MODEL.md).")(f)


def eval_target_options(f):
    """`vmr eval --freq-edges 1 5 20 [--data DIR [--cache FILE]]`."""
    f = click.option("--cache", "cache", default=None, type=click.Path(dir_okay=False),
                     help="With --data: its feature cache [default: DATA/features.h5].")(f)
    f = click.option("--data", "data", default=None, type=click.Path(file_okay=False),
                     help="Zero-shot: score this other dataset from content alone (same "
                          "encoders; IDs unknown); writes RUN/metrics_<split>@<name>-<fp>.json.")(f)
    return click.option("--freq-edges", "freq_edges", cls=MultiValueOption, type=int,
                        help="Metrics by how often the target was trained on: bucket edges "
                             "[default: 1 5 20 = 0, 1-4, 5-19, 20+ interactions].")(f)


def gallery_options(f):
    """`vmr gallery --run RUN --users N --top K --out DIR`."""
    f = click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                     help="Folder for the site (index.html, users/, thumbs/); open index.html.")(f)
    f = click.option("--top", default=10, show_default=True, type=click.IntRange(min=1),
                     help="Recommendations shown per user.")(f)
    f = click.option("--timeout", default=30.0, show_default=True, type=float,
                     help="Seconds one thumbnail may take to decode before its worker is "
                          "killed (the item gets a text card).")(f)
    f = click.option("--users", "users", default=10, show_default=True,
                     type=click.IntRange(min=1),
                     help="How many users to show (the first ones with a test item).")(f)
    return click.option("--run", "run", required=True, type=click.Path(file_okay=False),
                        help="Run directory written by `vmr train`.")(f)


def engine_options(f):
    """`vmr extract --engine local|ray --ray-address ADDR --ray-encoders N` (docs/SCALE.md)."""
    f = click.option("--ray-encoders", default=None, type=click.IntRange(min=1),
                     help="Ray, no GPU: CPU encoder actors [default: one per node].")(f)
    f = click.option("--ray-address", default=None,
                     help="Ray: the cluster to join (e.g. HEAD:6379) [default: $RAY_ADDRESS, "
                          "else a local cluster on this machine].")(f)
    return click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                        show_default=True, help="'ray': spread the job over a Ray cluster (CPU "
                        "tasks decode, one encoder actor per GPU; pip install 'vmr[ray]'; "
                        "docs/SCALE.md). Same cache as 'local'.")(f)


def explicit(name: str):
    """The value of option `name` of the running command when the user gave it, else None
    (left at its default: the command's own choice, e.g. `demo --quick`'s sizes)."""
    ctx = click.get_current_context()
    return ctx.params[name] if ctx.get_parameter_source(name).name != "DEFAULT" else None


def usage_line(e) -> str:
    """A click usage error in one line, naming the command's --help."""
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return " ".join(e.format_message().split()) + where


def demo_options(f):
    """`vmr demo`'s options (the catalogue's sizes, seeds, jobs), so that cli.py stays short."""
    opt = partial(click.option, show_default=True)
    f = click.option("--quick", is_flag=True,
                     help="Tiny sizes, one seed, few epochs (smoke tests).")(f)
    f = opt("--jobs", default=2, type=click.IntRange(min=1),
            help="Trainings at once (one CPU thread each).")(f)
    f = opt("--seeds", "seeds", default=3, type=click.IntRange(min=1),
            help="Training seeds per row (1, 2, ...): mean ± std, and the ordering check.")(f)
    f = opt("--seed", default=0, type=int, help="Seed of the catalogue.")(f)
    f = opt("--styles", "n_styles", default=4, type=click.IntRange(min=0),
            help="S > 0 (divides --topics): topic = (picture style, text theme); pictures "
                 "show the style, text the theme. 0: each modality shows it all [--quick: 2].")(f)
    f = opt("--topics", "n_topics", default=24, type=click.IntRange(min=2),
            help="Number of latent topics that drive content and behaviour [--quick: 4].")(f)
    f = opt("--users", "n_users", default=900, type=click.IntRange(min=20),
            help="Number of synthetic users.")(f)
    f = opt("--items", "n_items", default=1920, type=click.IntRange(min=20),
            help="Number of items in the synthetic catalogue.")(f)
    return opt("--out", "out", default="demo_out", type=click.Path(file_okay=False),
               help="Directory for the generated catalogue, the dataset, the cache and the "
                    "runs.")(f)
