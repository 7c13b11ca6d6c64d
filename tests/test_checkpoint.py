"""Checkpoints: round trip, weights_only safety, clear errors, compatibility, RNG states."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from dlkdd.errors import CheckpointError
from dlkdd.train import checkpoint as ck
from dlkdd.train.checkpoint import (SCHEMA_VERSION, check_compatible, get_rng_state, load_checkpoint,
                                    save_checkpoint, set_rng_state)


def _fields():
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 4, 8, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 4, 8, 8)).sum().backward()
    opt.step()
    return model, dict(kind="teacher", arch={"backbone": "tiny", "num_classes": 2, "mean": (0.1, 0.2, 0.3)},
                       config={"train": {"lr": 1e-3}}, classes=["a", "b"], model=model.state_dict(),
                       enhancer=None, optimizer=opt.state_dict(), epoch=3, rng=get_rng_state(),
                       metrics={"top1": 50.0, "per_class": [np.float32(1.0), 0.0]},
                       history=[{"epoch": 0, "train_loss": 1.0}], best_top1=50.0,
                       extra={"views": np.arange(4), "path": __import__("pathlib").Path("/x")})


def test_round_trip(tmp_path):
    model, f = _fields()
    p = save_checkpoint(tmp_path / "sub" / "c.pt", **f)
    ck_ = load_checkpoint(p)
    assert ck_["schema_version"] == SCHEMA_VERSION and ck_["dlkdd_version"]
    assert ck_["kind"] == "teacher" and ck_["classes"] == ["a", "b"] and ck_["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ck_["model"][k], v)
    assert ck_["optimizer"]["state"][0]["step"] == f["optimizer"]["state"][0]["step"]
    assert ck_["metrics"]["per_class"] == [1.0, 0.0]
    assert torch.equal(ck_["extra"]["views"], torch.arange(4)) and ck_["extra"]["path"] == "/x"
    assert ck_["scheduler"] is None  # absent fields read as None
    assert not list((tmp_path / "sub").glob("*.tmp"))  # atomic: no leftovers


def test_unknown_field_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown field"):
        save_checkpoint(tmp_path / "c.pt", kind="teacher", weights={})


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    _, f = _fields()
    p = save_checkpoint(tmp_path / "c.pt", **f)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(p)
    p.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(p)


def test_corrupt_last_points_to_best_only_when_it_is_another_file(tmp_path):
    from dlkdd.utils import atomic_link

    _, f = _fields()
    last = save_checkpoint(tmp_path / "last.pt", **f)
    atomic_link(last, tmp_path / "best.pt")  # best epoch == last epoch: one file, two names
    last.write_bytes(last.read_bytes()[:100])  # corrupted in place: best.pt with it
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(last)
    assert "best.pt" not in str(e.value)
    save_checkpoint(tmp_path / "best.pt", **f)  # now a separate, good file
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(last)
    assert f"or resume/evaluate from {tmp_path / 'best.pt'}" in str(e.value)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3


def test_not_a_dlkdd_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a dlkdd checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    torch.save({"obj": nn.Linear(1, 1)}, tmp_path / "pickled.pt")  # a module needs full unpickling
    with pytest.raises(CheckpointError, match="loaded safely"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_newer_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    p = save_checkpoint(tmp_path / "c.pt", kind="student")
    monkeypatch.setattr(ck, "SCHEMA_VERSION", SCHEMA_VERSION)
    with pytest.raises(CheckpointError, match=f"schema {SCHEMA_VERSION + 1}.*upgrade dlkdd"):
        load_checkpoint(p)


def test_check_compatible_names_differences():
    c = {"kind": "teacher", "arch": {"backbone": "r2plus1d_18", "head": "bert", "num_classes": 6}, "classes": None}
    check_compatible(c, kind="teacher", num_classes=6, arch={"backbone": "r2plus1d_18"})
    check_compatible(c, kind=("student", "teacher"))
    with pytest.raises(CheckpointError) as e:
        check_compatible(c, kind="student", num_classes=11, arch={"backbone": "r2plus1d_34", "head": "bert"},
                         path="x.pt")
    msg = str(e.value)
    assert msg.startswith("x.pt:") and "'teacher'" in msg and "class count is 6, the data has 11" in msg
    assert "'backbone' is 'r2plus1d_18', expected 'r2plus1d_34'" in msg and "'head'" not in msg


def test_rng_state_round_trip_through_file(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "r.pt", rng=get_rng_state())
    a = (torch.rand(3), np.random.randn(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (torch.rand(3), np.random.randn(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
