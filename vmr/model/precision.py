"""Mixed precision: bfloat16 autocast where the hardware computes bfloat16 natively.

`train.amp = true` runs the model's matrix products in bfloat16 on CUDA GPUs and on CPUs with
AVX512-BF16 or AMX (about twice the float32 rate there); elsewhere bfloat16 would be emulated,
slower than float32, so the flag is ignored and everything stays float32. Softmax statistics,
losses and evaluation scores stay float32 either way (see losses.full_softmax_loss and
evaluate.metrics)."""

from __future__ import annotations

import contextlib

import torch


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matrix products natively."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)
    return False


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on `device` if enabled and native there, else a no-op context."""
    if enabled and bf16_native(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_bf16(device: torch.device, enabled: bool) -> bool:
    """What `autocast(device, enabled)` will do, for logs and run.json."""
    return bool(enabled and bf16_native(device))
