"""Mixed precision and the allocator setting: when bfloat16 autocast applies, and that it is off
when disabled or not native; glibc's keep-freed-memory switch and its opt-out."""

import contextlib

import pytest
import torch

from vmr import allocator
from vmr.model import precision

CPU = torch.device("cpu")


def _linear_dtype():
    lin = torch.nn.Linear(4, 4)
    return lin(torch.randn(2, 4)).dtype


def test_disabled_autocast_is_a_no_op():
    with precision.autocast(CPU, False):
        assert not torch.is_autocast_enabled("cpu")
        assert _linear_dtype() == torch.float32
    assert precision.uses_bf16(CPU, False) is False


def test_enabled_but_not_native_stays_float32(monkeypatch):
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    ctx = precision.autocast(CPU, True)
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert _linear_dtype() == torch.float32
    assert precision.uses_bf16(CPU, True) is False


@pytest.mark.skipif(not precision.bf16_native(CPU), reason="this CPU has no native bfloat16")
def test_enabled_and_native_runs_linear_layers_in_bfloat16():
    with precision.autocast(CPU, True):
        assert torch.is_autocast_enabled("cpu")
        assert _linear_dtype() == torch.bfloat16
    assert _linear_dtype() == torch.float32
    assert precision.uses_bf16(CPU, True) is True


def test_unknown_device_types_are_not_native():
    assert precision.bf16_native(torch.device("meta")) is False


def test_keep_freed_memory_respects_the_opt_out(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("VMR_KEEP_MEMORY", "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.delenv("VMR_KEEP_MEMORY")
    import platform
    applied = allocator.keep_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
    assert allocator.keep_freed_memory() is applied      # applied once, answer cached
    x = torch.ones(64 << 20 >> 2)                         # a 64 MB tensor still works
    assert float(x.sum()) == float(64 << 20 >> 2)
