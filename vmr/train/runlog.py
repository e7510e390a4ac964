"""The run's human-readable record: metrics.csv (one row per stage and epoch, epochs 1-based as
on the console) and curves.png; with `train.tensorboard = true` also every row's numbers as
TensorBoard scalars in RUN/tensorboard/ (tag `<stage>/<column>`, step = epoch). Only the main
process writes."""

from __future__ import annotations

import csv
import os

from vmr.errors import VmrError
from vmr.fsio import atomic_write_text, one_line, save_figure
from vmr.model.rundir import RunDir

COLUMNS = ("stage", "epoch", "loss", "seconds", "seq_per_s", "valid_HR@5", "valid_NDCG@5",
           "valid_HR@10", "valid_NDCG@10", "valid_MRR", "eval_seconds",
           "L_pwc", "L_pwm", "L_i", "L_s", "L_is")
STAGE_ORDER = {"pretrain": 0, "sequence": 1}
TENSORBOARD_DIR = "tensorboard"


def tensorboard_writer_class():
    """torch's SummaryWriter, or a one-line error saying how to install what it needs."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs the package)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VmrError("train.tensorboard = true needs the tensorboard package: "
                       "pip install 'vmr[tensorboard]' (or pip install tensorboard), or set "
                       "train.tensorboard=false") from None
    return SummaryWriter


class MetricsLog:
    def __init__(self, run: RunDir, main: bool = True, tensorboard: bool = False):
        self.run, self.main = run, main
        self.tb = None
        if tensorboard and main:
            self.tb = tensorboard_writer_class()(log_dir=str(run.path / TENSORBOARD_DIR))

    def append(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        assert not unknown, unknown
        if not self.main:
            return
        if self.tb is not None:
            for c in COLUMNS[2:]:
                if isinstance(row.get(c), (int, float)):
                    self.tb.add_scalar(f"{row['stage']}/{c}", row[c], int(row["epoch"]))
            self.tb.flush()
        new = not self.run.csv.exists()
        with open(self.run.csv, "a", encoding="utf-8") as f:
            if new:
                f.write(",".join(COLUMNS) + "\n")
            f.write(",".join(_fmt(row[c]) if c in row else "" for c in COLUMNS) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def truncate(self, stage: str, epoch: int) -> None:
        """On resume, forget rows written after the checkpoint (stage, epoch) resumed from."""
        if not self.main or not self.run.csv.exists():
            return
        try:
            lines = self.run.csv.read_text(encoding="utf-8").splitlines()
            keep = lines[:1]
            for ln in lines[1:]:
                st, ep = ln.split(",")[:2]
                if (STAGE_ORDER[st], int(ep)) <= (STAGE_ORDER[stage], epoch):
                    keep.append(ln)
        except (UnicodeDecodeError, ValueError, KeyError) as e:
            raise VmrError(f"{self.run.csv}: damaged ({one_line(e)}); move it away to resume "
                           "(a new one is started)") from None
        atomic_write_text(self.run.csv, "\n".join(keep) + "\n")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def plot_curves(run: RunDir) -> None:
    """curves.png: training loss per epoch (both stages) and validation HR@10 / NDCG@10."""
    if not run.csv.exists():
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(run.csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for st, style in (("pretrain", "--"), ("sequence", "-")):
        part = [r for r in rows if r["stage"] == st and r["loss"]]   # epoch 0 has no loss
        if part:
            axes[0].plot([int(r["epoch"]) for r in part], [float(r["loss"]) for r in part],
                         style, label=f"{st} loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].legend()
    for col in ("valid_HR@10", "valid_NDCG@10"):
        pts = [(int(r["epoch"]), float(r[col])) for r in rows
               if r["stage"] == "sequence" and r.get(col)]
        if pts:
            axes[1].plot(*zip(*pts), marker=".", label=col.replace("valid_", "valid "))
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("metric")
    if axes[1].lines:
        axes[1].legend()
    fig.suptitle(run.path.name)
    fig.tight_layout()
    try:
        save_figure(fig, run.curves)
    finally:
        plt.close(fig)
