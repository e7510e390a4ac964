"""Data-parallel training with torch.distributed, started by torchrun:

    torchrun --nproc_per_node=N -m vmr train --data DIR --out RUN ...

Every rank builds the same batch list (same seed), takes its slice of each batch, and DDP
averages gradients (gloo on CPU, nccl on CUDA). Contrastive pre-training gathers the views of
all ranks (vmr.model.pretrain.gather_cat) so negatives come from the whole global batch.
Only rank 0 writes checkpoints, logs
and plots; every rank validates (the same model, so the same early-stopping decisions)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env() -> Dist:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    d = Dist(rank=dist.get_rank(), world=dist.get_world_size(),
             local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
    return d


def agree(d: Dist, flag: bool) -> bool:
    """True on every rank if it is true on any rank (for stop decisions based on the clock)."""
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
