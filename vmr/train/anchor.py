"""Fine-tuning held near its start (`train.anchor`, a decoupled L2-SP for `--init-from` runs).

After every optimiser step each weight loaded from the source moves back toward its starting
value by the fraction `pull`: w <- w + pull * (w0 - w). With pull = 0 the run is plain
fine-tuning; as pull -> 1 it is the source's model with new ID rows (the ID rows are not held:
they start at zero and have no source value). The starting weights travel in checkpoint.pt, so
--resume continues exactly."""

from __future__ import annotations

import torch

from vmr.train.ema import load_copies


class StartAnchor:
    def __init__(self, model: torch.nn.Module, pull: float, free: set[str]):
        """free: the parameter names left out (the item-ID rows)."""
        if not 0 < pull < 1:
            raise ValueError(f"pull must be in (0, 1), got {pull}")
        self.pull = pull
        named = dict(model.named_parameters())
        self.names = [n for n, p in named.items() if p.is_floating_point() and n not in free]
        self.params = [named[n] for n in self.names]
        self.start = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        """One pull toward the start (after opt.step)."""
        torch._foreach_lerp_([p.detach() for p in self.params], self.start, self.pull)

    def distance(self) -> float:
        """The L2 distance of the held weights from their start."""
        with torch.no_grad():
            return float(sum(((p - s) ** 2).sum() for p, s in zip(self.params, self.start)) ** 0.5)

    def state_dict(self) -> dict:
        return {"pull": self.pull, "start": dict(zip(self.names, self.start))}

    def load_state_dict(self, state: dict) -> None:
        load_copies(self.start, self.names, state["start"], "the starting weights")
