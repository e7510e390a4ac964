"""The parts of an export that need no vmr to use (`vmr export` writes them beside the rest):

- `user_tower.ts`  TorchScript (torch.jit.load): input a LongTensor [B, L] of item indices
                   (row k of item_embeddings / line k of item_ids.txt), oldest first, LEFT-padded
                   with -1; output float32 user vectors [B, d]. The run's item table is baked in;
                   histories longer than the model's max_len are cut to their last items, as
                   `vmr recommend` does. score(u, j) = <user_vector(u), item_embeddings[j]>.
- `item_embeddings.safetensors`  the same float32 [N, d] matrix as item_embeddings.npy under
                   the key "item_embeddings" (only where the safetensors package is installed).

Precision: the tower is traced and runs in float32. For a run trained with `train.amp = false`
(or on hardware without native bfloat16, where amp does nothing) it reproduces `vmr recommend`
exactly; for a bfloat16 run, `vmr recommend` computes the sequence tower under bfloat16 autocast
and the scores differ from the float32 tower's by bfloat16 rounding (about 1e-2 relative), so
near-ties may swap (manifest.json's `user_tower_ts.run_precision` says which case applies).

The tower is a scripted wrapper (history preparation: cut, trim all-padding columns, append the
objective's prediction slots, as the masked objective's [mask]) around two traced copies of the
model's user tower, one for a single position and one for longer inputs, so that it runs the
same code path as vmr's own model does for every history length."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from vmr.model.objectives import objective_of

TS_FILE = "user_tower.ts"
SAFETENSORS_FILE = "item_embeddings.safetensors"


class _Core(nn.Module):
    """The model's user tower with the item table baked in: prepared [B, L] -> [B, d]."""

    def __init__(self, model: nn.Module, table: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("table", table.detach().float().contiguous().clone())

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.model.user_vectors(seq, self.table).float()


class UserTower(nn.Module):
    """[B, L] left-padded item indices (-1 = padding) -> [B, d] float32 user vectors."""

    def __init__(self, one: nn.Module, many: nn.Module, max_len: int, slots: int):
        super().__init__()
        self.one = one
        self.many = many
        self.max_len = max_len
        self.slots = slots          # the objective's prediction slots (vmr/model/objectives.py)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        seq = seq.to(torch.long)
        keep = self.max_len - self.slots
        if seq.size(1) > keep:
            seq = seq[:, seq.size(1) - keep:]
        used = (seq >= 0).any(0).nonzero()
        if used.size(0) > 0:                     # drop columns that are padding in every row
            seq = seq[:, int(used[0, 0]):]
        else:
            seq = seq[:, seq.size(1):]
        if self.slots > 0:                       # the slots whose prediction is the next item
            seq = torch.cat([seq, torch.zeros(seq.size(0), self.slots, dtype=seq.dtype,
                                              device=seq.device)], 1)
        elif seq.size(1) == 0:                   # empty histories: one padding position
            seq = torch.full((seq.size(0), 1), -1, dtype=seq.dtype, device=seq.device)
        if seq.size(1) == 1:
            return self.one(seq)
        return self.many(seq)


def build_user_tower(model: nn.Module, table: torch.Tensor) -> torch.jit.ScriptModule:
    """The TorchScript user tower of an eval-mode model (any model kind)."""
    cfg = model.cfg
    slots = objective_of(cfg).prediction_slots
    core = _Core(model, table).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")          # deprecation and constant-folding notices
        one = torch.jit.trace(core, torch.zeros(1, 1, dtype=torch.long), check_trace=False)
        many = torch.jit.trace(core, torch.zeros(1, 2, dtype=torch.long), check_trace=False)
        return torch.jit.script(UserTower(one, many, int(cfg.max_len), slots))


def write_portable(loaded, out: Path, emb) -> list[str]:
    """Write user_tower.ts (and item_embeddings.safetensors where available) into `out`;
    returns the names written."""
    import numpy as np

    tower = build_user_tower(loaded.model.cpu().eval(), loaded.tower.input_table().cpu())
    buf = io.BytesIO()                           # a full disk is then a plain OSError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch.jit's deprecation notice
        torch.jit.save(tower, buf)
    (out / TS_FILE).write_bytes(buf.getbuffer())
    names = [TS_FILE]
    try:
        from safetensors.numpy import save as st_save
    except ImportError:
        return names
    data = st_save({"item_embeddings": np.ascontiguousarray(emb, dtype=np.float32)},
                   metadata={"format": "vmr item embeddings", "rows": "item_ids.txt order"})
    (out / SAFETENSORS_FILE).write_bytes(data)
    return names + [SAFETENSORS_FILE]


def run_precision(loaded) -> str:
    """The precision `vmr recommend` runs this run's towers in on this machine (a counting
    model, popularity, has no products that autocast would change)."""
    from vmr.model.kinds import model_kind
    from vmr.model.precision import uses_bf16

    if model_kind(loaded.ckpt["model_args"]["kind"]).trained_by == "counts":
        return "float32"
    return "bfloat16" if uses_bf16(loaded.device, loaded.config.train.amp) else "float32"


def tower_manifest(loaded) -> dict:
    """What manifest.json says about user_tower.ts."""
    cfg = loaded.model.cfg
    return {"file": TS_FILE, "input": "LongTensor [B, L] item indices (item_ids.txt order), "
            "oldest first, left-padded with -1", "output": "float32 [B, d] user vectors",
            "max_len": int(cfg.max_len), "objective": objective_of(cfg).name,
            "precision": "float32", "run_precision": run_precision(loaded)}
