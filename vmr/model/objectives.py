"""The training objectives of the sequence tower: `model.objective` names one of the classes
registered here, and everything that depends on the objective (is attention causal, how wide
are the training windows, how is a batch of rows turned into inputs and targets, which history
items precede a target for the repeat term, what is appended to a history at prediction time)
is asked of its object, never by comparing its name. `objective_of(model_cfg)` is the one place
the name is read.

Adding an objective: an `Objective` subclass and one `register` line below (docs/DESIGN.md,
"Add an objective")."""

from __future__ import annotations

import torch

from vmr.model import history
from vmr.model.config_keys import ModelConfig
from vmr.model.named import Named


class Objective:
    """An objective of the sequence stage, for one model config (`cfg`): a subclass sets the
    class attributes and implements `window`, `training_batch` and `repeat_pairs`."""

    name: str = ""                # the value `model.objective` selects
    help: str = ""                # one line: what the objective trains
    causal_attention: bool = True  # a position attends only to itself and those before it
    prediction_slots: int = 0     # positions appended after a history at prediction time: the
    #                               last max_len - slots items are kept, the slots hold item 0
    #                               and their input is the [mask] item; the last one's output is
    #                               the user vector

    def __init__(self, cfg: ModelConfig | None = None):
        self.cfg = cfg if cfg is not None else ModelConfig(objective=self.name)

    def window(self, max_len: int) -> tuple[int, int]:
        """(width, min_len) of the training rows cut from users' prefixes
        (vmr.train.batches.window_rows): prefixes shorter than min_len are skipped."""
        raise NotImplementedError

    def training_batch(self, rows: torch.Tensor, n_items: int, device,
                       generator: torch.Generator | None = None):
        """rows [B, W] left-padded (-1) windows -> (inputs, replace_mask or None, targets) on
        `device`: targets negative where a position has none; replace_mask marks inputs that
        are the [mask] item. Random draws use `generator` (None: torch's global one)."""
        raise NotImplementedError

    def fixed_targets(self, rows: torch.Tensor) -> float | None:
        """The number of training targets in `rows` where it does not depend on random draws
        (the trainer then weights every target of an epoch equally), else None."""
        return None

    def repeat_pairs(self, inp: torch.Tensor, tgt: torch.Tensor, sel: torch.Tensor):
        """(rows, cols, recency) of every (target, earlier history item) pair of a training
        batch (vmr.model.history.training_pairs): the items a target's prediction saw before."""
        raise NotImplementedError

    def prediction_replace_mask(self, seq: torch.Tensor) -> torch.Tensor | None:
        """[B, L] bool: the positions of a prepared history whose input is the [mask] item (the
        prediction slots), or None where there are none."""
        if self.prediction_slots == 0:
            return None
        rm = torch.zeros_like(seq, dtype=torch.bool)
        rm[:, -self.prediction_slots:] = True
        return rm


class Causal(Objective):
    name = "causal"
    help = "left-to-right attention, the next item at every position"

    def window(self, max_len: int) -> tuple[int, int]:
        return max_len + 1, 2              # max_len inputs and the item after each

    def training_batch(self, rows, n_items, device, generator=None):
        return rows[:, :-1], None, rows[:, 1:]

    def fixed_targets(self, rows):
        return float((rows[:, 1:] >= 0).sum())

    def repeat_pairs(self, inp, tgt, sel):
        return history.training_pairs(inp, sel, True)     # inputs at positions <= t precede t


class Masked(Objective):
    name = "masked"
    help = "masked item prediction (paper 3.2.3): bidirectional attention, a [mask] appended"
    causal_attention = False
    prediction_slots = 1

    def window(self, max_len: int) -> tuple[int, int]:
        return max_len, 1

    def training_batch(self, rows, n_items, device, generator=None):
        inp, rm, tgt = mask_for_prediction(rows.cpu(), self.cfg.mask_rate, n_items, generator)
        return inp.to(device), rm.to(device), tgt.to(device)

    def repeat_pairs(self, inp, tgt, sel):
        # the original items: the targets where an input was replaced
        return history.training_pairs(torch.where(sel, tgt, inp), sel, False)


def mask_for_prediction(seq: torch.Tensor, rate: float, n_items: int,
                        generator: torch.Generator | None = None):
    """BERT-style corruption for the masked objective (paper 3.2.3).

    seq [B, L] left-padded. Each real position becomes a target with probability `rate`; the last
    position is always a target and always the [mask] item, as at prediction time (the paper:
    the last position is replaced by [mask]). Any other target's input is the [mask] item 80% of
    the time, a random item 10%, unchanged 10%. Returns (inputs, replace_mask, targets) with
    targets -100 elsewhere."""
    real = seq >= 0
    u = torch.rand(seq.shape, generator=generator)
    chosen = (u < rate) & real
    chosen[:, -1] = real[:, -1]
    v = torch.rand(seq.shape, generator=generator)
    to_mask = chosen & (v < 0.8)
    to_rand = chosen & (v >= 0.8) & (v < 0.9)
    to_mask[:, -1] = chosen[:, -1]
    to_rand[:, -1] = False
    rand_items = torch.randint(0, n_items, seq.shape, generator=generator)
    inputs = torch.where(to_rand, rand_items, seq)
    targets = torch.where(chosen, seq, torch.full_like(seq, -100))
    return inputs, to_mask, targets


OBJECTIVES = Named("name", "model.objective")
register = OBJECTIVES.register


register(Causal)      # causal: next-item prediction (the default)
register(Masked)      # masked: the paper's masked item prediction


def objective_of(cfg: ModelConfig) -> Objective:
    """The objective `cfg.objective` names, for that model config."""
    return OBJECTIVES.lookup(cfg.objective)(cfg)
