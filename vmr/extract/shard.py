"""Splitting one extraction over several processes or machines.

`--shard I/N` (1-based: 1 <= I <= N) processes a deterministic 1/N of the work into its own file
`<cache without .h5>.shard-I-of-N.h5`; `vmr cache merge` assembles the shard files. The work is
cut into units numbered 0, 1, 2, ... and shard I takes the units u with u % N == I - 1:

- video, image: a unit is one item, in dataset order (unit u = item row u);
- text: a unit is one encoder batch of the texts sorted by length (character count, ties in
  dataset order), `--batch-size` items each. Sharded and unsharded runs therefore encode exactly
  the same batches and give bit-identical vectors; all shards of a text job must use the same
  --batch-size (merge checks).

`--shard auto` takes I = RANK + 1 and N = WORLD_SIZE from the environment (torchrun).
"""

from __future__ import annotations

import os

from vmr.errors import VmrError


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N), 'auto' -> from RANK / WORLD_SIZE, None -> None (no sharding)."""
    if value is None:
        return None
    if value.strip() == "auto":
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            raise VmrError("--shard auto needs the RANK and WORLD_SIZE environment variables "
                           "(set by torchrun); otherwise pass --shard I/N")
        try:
            i, n = int(rank) + 1, int(world)
        except ValueError:
            raise VmrError(f"--shard auto: RANK={rank!r} / WORLD_SIZE={world!r} are not "
                           "integers") from None
    else:
        parts = value.strip().split("/")
        try:
            i, n = int(parts[0]), int(parts[1])
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError):
            raise VmrError(f"--shard {value!r}: expected I/N, e.g. 1/4 (shards are numbered "
                           "from 1), or auto") from None
    if n < 1 or not 1 <= i <= n:
        raise VmrError(f"--shard {value}: need 1 <= I <= N (shards are numbered from 1), got "
                       f"I={i}, N={n}")
    return i, n


def shard_path(cache: str, i: int, n: int) -> str:
    """features.h5 -> features.shard-2-of-4.h5"""
    root, ext = os.path.splitext(cache)
    if ext.lower() not in (".h5", ".hdf5"):
        root, ext = cache, ".h5"
    return f"{root}.shard-{i}-of-{n}{ext}"


def text_units(texts: list[str | None], batch_size: int) -> list[list[int]]:
    """Item rows grouped into the text encoder's batches: sorted by character length (ties in
    dataset order), `batch_size` per batch. Empty texts sort first (they become failures)."""
    order = sorted(range(len(texts)), key=lambda r: (len((texts[r] or "").strip()), r))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def take(units: list, shard: tuple[int, int] | None) -> list:
    """The units a shard processes (all of them without sharding)."""
    if shard is None:
        return units
    i, n = shard
    return units[i - 1::n]
