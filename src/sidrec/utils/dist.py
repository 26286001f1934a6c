"""torch.distributed for every trainer, launched by ``torchrun`` (NCCL on GPUs, gloo on CPU).

``setup()`` (called by the CLI) joins the process group when ``WORLD_SIZE`` > 1; the training loop then
splits every global batch into equal per-rank slices, averages gradients (``average_gradients``, after
backward, whatever the loss function), reduces the epoch loss,
validates on rank 0 and broadcasts the decision, and only rank 0 writes files. One process: all no-ops.
A model that says ``shardable`` (LC-Rec under full fine-tuning) is sharded with FSDP instead (its ``shard()``):
each rank holds 1/W of the weights, gradients and optimizer state, FSDP reduces the gradients, every rank
validates (the sharded forward is a collective) and whole state dicts are gathered to save (``full_state``).
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather as differentiable_all_gather

from sidrec.errors import SidrecError


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup() -> int:
    """Join the torchrun process group if there is one; returns the world size."""
    n = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if n > 1 and not dist.is_initialized():
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise SidrecError(f"WORLD_SIZE={n} but {', '.join(missing)} not set: start several processes with "
                              f"torchrun --nproc_per_node {n} -m sidrec ...")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
        atexit.register(teardown)
    return world()


def teardown(wait: bool = True) -> None:
    """Leave the process group together: a rank that destroys its group while another still works (rank 0
    decoding the test split) can abort in gloo's threads ("terminate called without an active exception").
    ``wait=False`` (a rank that failed) leaves at once: its peers fail on their next collective instead of this
    rank waiting for them at a barrier they may never reach."""
    global _failed
    if not wait:
        _failed = True
    if dist.is_available() and dist.is_initialized():
        if world() > 1 and not _failed:
            dist.barrier()
        dist.destroy_process_group()


def abandon() -> None:
    """Leave the process group without waiting for the other ranks (after an error)."""
    teardown(wait=False)


_failed = False


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def broadcast(obj):
    """``obj`` of rank 0 on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(model: torch.nn.Module) -> None:
    """Every parameter and buffer of rank 0 on every rank (after a step only rank 0 may take, e.g. re-seeding)."""
    if world() == 1:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def average_gradients(model: torch.nn.Module, weight: float) -> None:
    """Replace every gradient by the weighted sum over ranks (weight = this rank's share of the global batch:
    for a loss that is a mean over samples this is the whole batch's gradient), one flat all-reduce."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if world() == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows of ``x`` (n_r, ...) concatenated in rank order (ranks may hold different counts),
    differentiable when ``x`` requires grad (the gradient of another rank's rows flows back to that rank), and
    the offset of this rank's rows. One process: (x, 0)."""
    if world() == 1:
        return x, 0
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    top = max(sizes)
    pad = torch.cat([x, x.new_zeros((top - len(x), *x.shape[1:]))]) if top > len(x) else x
    if x.requires_grad:
        parts = differentiable_all_gather(pad)
    else:
        parts = [torch.empty_like(pad) for _ in range(world())]
        dist.all_gather(parts, pad)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)]), sum(sizes[:rank()])


def shard(batch: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...] | None, float]:
    """This rank's slice of a global batch (rows r*n/W .. (r+1)*n/W) and its share of the rows; (None, 0)
    when the batch has fewer rows than ranks (every rank skips it)."""
    W = world()
    if W == 1:
        return batch, 1.0
    n = len(batch[0])
    if n < W:
        return None, 0.0
    r = rank()
    lo, hi = r * n // W, (r + 1) * n // W
    return tuple(b[lo:hi] for b in batch), (hi - lo) / n


def total(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (a copy)."""
    if world() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


# FSDP (PyTorch's fully_shard): full fine-tuning of a model too large for one GPU's weights + gradients + optimizer
# state. The model shards itself (``model.shard()``: each block its own unit); these move whole state dicts in and
# out of the shards (collectives: every rank calls them).
def full_state(model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """The sharded model's (and optimizer's) full state dicts on the CPU (every rank gets them)."""
    from torch.distributed.checkpoint.state_dict import (  # sharded runs only
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=options)
    osd = get_optimizer_state_dict(model, opt, options=options) if opt is not None else None
    return msd, osd


def load_full_state(model: torch.nn.Module, msd: dict, opt: torch.optim.Optimizer | None = None,
                    osd: dict | None = None) -> None:
    """Full state dicts (the same on every rank) into the sharded model (and optimizer)."""
    from torch.distributed.checkpoint.state_dict import (  # sharded runs only
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, msd, options=options)
    if opt is not None and osd is not None:
        set_optimizer_state_dict(model, opt, osd, options=options)
