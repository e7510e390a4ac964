"""Where and how reproducibly training runs: the device, the seeds, and the RNG state a
checkpoint carries (as tensors and plain values, so checkpoints load with weights_only)."""

from __future__ import annotations

import random

import numpy as np
import torch

from vmr.errors import VmrError


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu' / 'cuda[:N]' as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VmrError(f"train.device = {name!r} but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise VmrError(f"train.device = {name!r}: not a device (use auto, cpu or cuda[:N])") \
            from None


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    """torch, numpy and Python RNG states as tensors, lists and numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "gauss": float(gauss)},
          "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
