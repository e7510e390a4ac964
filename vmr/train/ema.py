"""An exponential moving average of the model's weights (`train.ema`, Polyak averaging).

After every optimiser step: shadow = decay * shadow + (1 - decay) * weight, for every
floating-point parameter. Validation, early stopping and best.pt use the averaged weights;
training goes on from the raw ones, and checkpoint.pt keeps both, so --resume is exact."""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.is_floating_point()]
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.names]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average (after opt.step)."""
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    @contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its own again after it."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": dict(zip(self.names, self.shadow))}

    def load_state_dict(self, state: dict) -> None:
        load_copies(self.shadow, self.names, state["shadow"], "the averaged weights")


def load_copies(copies: list[torch.Tensor], names: list[str], saved: dict, what: str) -> None:
    """Fill `copies` (one tensor per name) from a saved {name: tensor}; KeyError naming the first
    missing one."""
    missing = [n for n in names if n not in saved]
    if missing:
        raise KeyError(f"{what} lack {missing[0]}")
    with torch.no_grad():
        for c, n in zip(copies, names):
            c.copy_(saved[n])
