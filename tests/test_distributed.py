"""DDP on CPU (gloo, 2 processes): one training step on per-rank halves equals a single-process
step on the whole batch, and the reduced train/eval metrics equal the single-process ones; the
wrap gives every rank rank 0's initial weights; chunk-aligned row shards; per-rank RNG seeds."""
from __future__ import annotations

import logging
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from dlkdd.train.distributed import (DistInfo, SeededRandomSampler, ShardSampler, broadcast_object, build_sampler,
                                     init_distributed, seed_rank_rng, unwrap, wrap_ddp)
from dlkdd.cache.parts import shard_rows
from dlkdd.config import TrainConfig
from dlkdd.train.engine import EpochRun, evaluate, train_one_epoch
from dlkdd.train.objectives import CrossEntropyObjective

C = 3


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(2, C))


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"video": torch.randn(8, 3, 2, 6, 6, generator=g), "label": torch.arange(8) % C,
            "key": [f"k{i}" for i in range(8)]}


def _half(batch, rank):
    return {k: v[rank * 4:(rank + 1) * 4] for k, v in batch.items()}


def _step(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train_m = train_one_epoch(model, batches, CrossEntropyObjective(), opt, None, 0, TrainConfig(amp="fp32"),
                              EpochRun("cpu", progress=False))
    eval_m = evaluate(model, batches, "cpu", C, amp="fp32", progress=False)
    return train_m, eval_m


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    info = init_distributed(torch.device("cpu"))  # callers pass a resolved device
    assert info.distributed and info.rank == rank and info.is_main == (rank == 0)
    torch.manual_seed(100 + rank)  # different initial weights per rank: the wrap must unify them
    other = wrap_ddp(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), info, sync_bn=True)  # sync_bn: CPU ignores
    assert isinstance(unwrap(other)[1], nn.BatchNorm1d)
    model = wrap_ddp(_model(), info)
    train_m, eval_m = _step(model, [_half(_batch(), rank)])
    torch.save({"state": unwrap(model).state_dict(), "train": train_m, "eval": eval_m,
                "other": unwrap(other).state_dict(), "obj": broadcast_object({"todo": [rank, 7]}),
                "quiet": logging.getLogger("dlkdd").isEnabledFor(logging.INFO)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    from dlkdd.train.distributed import cleanup

    cleanup()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_ddp_step_equals_single_process(tmp_path):
    # spawn, as torchrun starts fresh processes. With fork, the workers once did not finish in 90 s
    # in a full fresh-clone run: a fork of this pytest process, which by then runs OpenMP and zarr's
    # I/O threads, can inherit locks held by threads that do not exist in the child
    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=2):  # raises if a worker failed; a hung collective fails here, not at 600 s
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2 DDP workers did not finish in 90 s (hung collective?)")
    single = _model()
    train_m, eval_m = _step(single, [_batch()])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in single.state_dict().items():
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # ranks agree exactly
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(single.state_dict()["4.weight"], _model().state_dict()["4.weight"])
    torch.manual_seed(100)
    rank0_init = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).state_dict()
    for k, v in rank0_init.items():  # DDP broadcast rank 0's parameters and buffers at the wrap
        assert torch.equal(r0["other"][k], v) and torch.equal(r1["other"][k], v), k
    assert r0["obj"] == r1["obj"] == {"todo": [0, 7]}
    assert r1["quiet"] is False  # rank 1 logs warnings only
    for r in (r0, r1):
        assert r["train"]["clips"] == 8
        assert r["train"]["loss"] == pytest.approx(train_m["loss"], rel=1e-6)
        assert r["train"]["top1"] == pytest.approx(train_m["top1"])
        assert r["eval"]["n"] == 8 and r["eval"]["confusion"] == eval_m["confusion"]
        assert r["eval"]["loss"] == pytest.approx(eval_m["loss"], rel=1e-5)


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo() and not info.distributed
    m = nn.Linear(2, 2)
    assert wrap_ddp(m, info) is m and unwrap(m) is m
    s = build_sampler(list(range(10)), info, shuffle=True, seed=3)
    assert isinstance(s, SeededRandomSampler)
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(2)
    b = list(s)
    s.set_epoch(1)
    assert list(s) == a and a != b and sorted(a) == list(range(10))
    two = DistInfo(rank=1, world_size=2, local_rank=1, is_main=False)
    shard = build_sampler(list(range(5)), two, shuffle=False, even=False)
    assert isinstance(shard, ShardSampler) and list(shard) == [1, 3]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("rpc", [1, 4])
def test_shard_rows_disjoint_complete_chunk_aligned(world, rpc):
    rows = [0, 1, 2, 5, 6, 9, 12, 13, 14, 15, 17]  # the missing rows of a partly done store
    shares = [shard_rows(rows, r, world, rpc) for r in range(world)]
    assert sorted(sum(shares, [])) == rows  # every row once: no padding, no duplicate, none missing
    owners = {}
    for r, share in enumerate(shares):
        assert share == sorted(share)
        for row in share:
            assert owners.setdefault(row // rpc, r) == r  # no chunk written by two ranks
    sizes = [len({row // rpc for row in share}) for share in shares]
    assert max(sizes) - min(sizes) <= 1  # whole chunks dealt round-robin
    if rpc == 1:
        assert shares == [rows[r::world] for r in range(world)]
    with pytest.raises(ValueError):
        shard_rows(rows, world, world)


def test_rank_rng_differs_between_ranks_and_replays():
    def draw(epoch, rank):
        seed_rank_rng(5, epoch, rank)
        return torch.rand(4)

    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(0, 1)) and not torch.equal(draw(0, 0), draw(1, 0))
