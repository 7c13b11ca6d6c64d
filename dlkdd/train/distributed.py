"""Distributed data parallel (DDP) helpers; everything is a no-op in a single process.

Under ``torchrun`` (env vars ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) :func:`init_distributed` joins the process group: NCCL on CUDA (one GPU per
process, ``cuda:LOCAL_RANK``), gloo on CPU. The engine reduces metric sums across ranks with
:func:`all_reduce_sum` and writes checkpoints/logs on rank 0 only.

Data order is deterministic per epoch: :func:`build_sampler` returns a sampler seeded by
``(seed, epoch)`` (call ``set_epoch``), and :func:`build_loader` gives the DataLoader its own
generator, re-seeded per epoch by the engine, so a resumed run reads the same batches
(also with worker processes).

Model init and per-rank randomness: every rank seeds with the config seed before building the
model, and ``DistributedDataParallel`` broadcasts rank 0's parameters and buffers when it wraps
the model (``_sync_module_states``), so all ranks start from identical weights. The randomness
*inside* the forward pass (dropout, the BERT head's token masking) should differ between ranks
(else every rank draws the same masks for different clips): :func:`seed_rank_rng` re-seeds the
torch RNG per ``(seed, epoch, rank)`` at the start of each epoch, which also keeps a resumed
distributed run exact (a checkpoint holds rank 0's RNG state only).

BatchNorm under DDP normalises with each rank's own batch statistics (running statistics are
rank 0's, broadcast at every forward: ``broadcast_buffers=True``). ``wrap_ddp(..., sync_bn=True)``
(``train.sync_bn``) converts BatchNorm to ``SyncBatchNorm`` (statistics over the global batch;
CUDA only, one extra all-reduce per BN layer) - worth it only when the per-GPU batch is tiny.

Sharding rows for writers is :func:`dlkdd.cache.parts.shard_rows`: it gives each rank whole storage chunks of a list
of rows, without padding, so no two ranks ever write the same chunk.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sized

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

log = logging.getLogger(__name__)

__all__ = ["DistInfo", "init_distributed", "wrap_ddp", "unwrap", "build_sampler", "build_loader",
           "SeededRandomSampler", "ShardSampler", "all_reduce_sum", "barrier", "cleanup", "is_distributed",
           "loader_seed", "seed_rank_rng", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``; ``is_main`` = rank 0."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_main: bool = True
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device: str | torch.device) -> DistInfo:
    """Join the torchrun process group if launched by torchrun, else return a single-process info.

    ``device``: the requested device (``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun).
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        kw = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, **kw)
        log.info("joined process group: rank %d/%d, backend %s, device %s", rank, world, backend, device)
    if rank != 0:  # one copy of the INFO log (rank 0's); warnings and errors from every rank
        logging.getLogger("dlkdd").setLevel(max(logging.WARNING, logging.getLogger("dlkdd").getEffectiveLevel()))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, is_main=rank == 0, device=device)


def wrap_ddp(model: nn.Module, info: DistInfo, sync_bn: bool = False, **kwargs: Any) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself.

    DDP broadcasts rank 0's parameters and buffers here, so the ranks start identical.
    ``sync_bn``: convert BatchNorm layers to ``SyncBatchNorm`` first (CUDA only; ignored with a
    warning on CPU, where PyTorch's SyncBatchNorm does not run).
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("sync_bn ignored on %s: SyncBatchNorm needs CUDA; each rank keeps its own BatchNorm "
                        "statistics", info.device)

    if info.device.type == "cuda":
        return DDP(model, device_ids=[info.device.index], output_device=info.device.index, **kwargs)
    return DDP(model, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper and/or ``torch.compile`` (for saving/evaluating)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def loader_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffling / worker seeds (same convention as DistributedSampler)."""
    return (int(seed) + int(epoch)) % (2**63)


def seed_rank_rng(seed: int, epoch: int, rank: int) -> None:
    """Seed the torch RNG (CPU and CUDA) of this process for ``epoch`` from ``(seed, epoch, rank)``.

    Called at the start of each epoch of a distributed run: dropout and token masks then differ
    between ranks, and a resumed run draws the same masks as an uninterrupted one.
    """
    import hashlib

    h = hashlib.sha256(f"dlkdd-rank-rng:{int(seed)}:{int(epoch)}:{int(rank)}".encode()).hexdigest()
    torch.manual_seed(int(h[:15], 16))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself in a single process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class SeededRandomSampler(Sampler[int]):
    """A random permutation of ``range(len(data))`` that depends only on ``(seed, epoch)``."""

    def __init__(self, data: Sized, seed: int = 0):
        self.n = len(data)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(loader_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s share ``rank, rank+W, ...`` of ``range(n)`` without padding (evaluation:
    every sample counted exactly once across ranks)."""

    def __init__(self, data: Sized, rank: int, world_size: int):
        self.indices = list(range(rank, len(data), world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_sampler(dataset: Sized, info: DistInfo, shuffle: bool, seed: int = 0, even: bool = True) -> Sampler:
    """The sampler of ``dataset`` for this process.

    Distributed: ``DistributedSampler`` (pads to equal shares; ``even=False``: a :class:`ShardSampler`
    with no padding, for evaluation). Single process: :class:`SeededRandomSampler` when
    ``shuffle``, else sequential.
    """
    if info.distributed:
        if not even and not shuffle:
            return ShardSampler(dataset, info.rank, info.world_size)
        return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed)
    if shuffle:
        return SeededRandomSampler(dataset, seed)
    return SequentialSampler(dataset)


def build_loader(dataset: Dataset, info: DistInfo, tc: Any, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 even: bool = True, collate_fn: Any = None) -> DataLoader:
    """A DataLoader over :func:`build_sampler` with its own generator (re-seeded per epoch by the
    engine through :func:`loader_seed`); ``tc`` (the ``train`` config section) gives ``batch_size``
    and ``workers``. Workers are not persistent, so ``dataset.set_epoch`` reaches them; a worker that
    cannot hand over a batch raises instead of hanging the run (:mod:`dlkdd.data.workers`)."""
    from dlkdd.data.workers import worker_context

    workers = int(tc.workers)
    sampler = build_sampler(dataset, info, shuffle, seed, even=even)
    gen = torch.Generator().manual_seed(loader_seed(seed, 0))
    return DataLoader(dataset, batch_size=int(tc.batch_size), sampler=sampler, num_workers=workers,
                      drop_last=drop_last, generator=gen, collate_fn=collate_fn,
                      pin_memory=info.device.type == "cuda",
                      multiprocessing_context=worker_context() if workers else None)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
