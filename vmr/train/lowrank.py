"""Fine-tuning by a low-rank update of every loaded weight matrix (`train.lowrank`, LoRA's idea,
for `--init-from` runs).

Each weight matrix loaded from the source, W [out, in] with min(out, in) > rank, becomes
W = W0 + B A: W0 its starting value (fixed), A [rank, in] and B [out, rank] trained. B starts at
zero, so the first state is the source's model (the zero-shot start), and the update can never
leave a rank-`rank` subspace of W0. A starts uniform in +-1/sqrt(in) (a linear layer's own
initial range). The model keeps its plain weights (best.pt and every reader see W itself):
after the backward pass the gradient G of W becomes those of the factors (dB = G A^T,
dA = B^T G) and W's own is dropped, so the optimiser steps A and B; after the step W is set to
W0 + B A. Vectors (biases, LayerNorms) and matrices too small to factor train as they are; the
item-ID rows are not loaded from the source and train freely. W0, A and B travel in
checkpoint.pt, so --resume continues exactly."""

from __future__ import annotations

import torch

from vmr.train.ema import load_copies


class LowRankUpdate:
    def __init__(self, model: torch.nn.Module, rank: int, free: set[str], seed: int = 0):
        """free: the parameter names never factored (the item-ID rows); seed: A's draw."""
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.rank = rank
        named = dict(model.named_parameters())
        self.names = [n for n, p in named.items() if p.is_floating_point() and p.ndim == 2
                      and n not in free and min(p.shape) > rank and p.requires_grad]
        self.weights = [named[n] for n in self.names]
        self.start = [w.detach().clone() for w in self.weights]
        g = torch.Generator().manual_seed(seed)
        self.a = [torch.nn.Parameter(((torch.rand(rank, w.shape[1], generator=g) * 2 - 1)
                                      / w.shape[1] ** 0.5).to(w)) for w in self.weights]
        self.b = [torch.nn.Parameter(w.new_zeros(w.shape[0], rank)) for w in self.weights]

    def params(self) -> list[torch.nn.Parameter]:
        """The factors, for the optimiser (A and B of each matrix in turn)."""
        return [p for ab in zip(self.a, self.b) for p in ab]

    @torch.no_grad()
    def move_grads(self) -> None:
        """After backward: W's gradient becomes its factors' (a W without one, held or frozen,
        leaves its factors without one, so the optimiser skips them)."""
        for w, a, b in zip(self.weights, self.a, self.b):
            g = w.grad
            a.grad = b.grad = None
            if g is None:
                continue
            b.grad = g @ a.t()
            a.grad = b.t() @ g
            w.grad = None

    @torch.no_grad()
    def apply(self) -> None:
        """After the optimiser step: W = W0 + B A."""
        for w, w0, a, b in zip(self.weights, self.start, self.a, self.b):
            torch.addmm(w0, b, a, out=w.detach())

    def state_dict(self) -> dict:
        return {"rank": self.rank, "start": dict(zip(self.names, self.start)),
                "a": dict(zip(self.names, self.a)), "b": dict(zip(self.names, self.b))}

    def load_state_dict(self, state: dict) -> None:
        if state.get("rank") != self.rank:
            raise KeyError(f"rank {state.get('rank')} was saved, not {self.rank}")
        load_copies(self.start, self.names, state["start"], "the starting weights")
        load_copies(self.a, self.names, state["a"], "the factors A")
        load_copies(self.b, self.names, state["b"], "the factors B")
