"""ClipDataset with the training / evaluation view policies: samples, reproducible training views,
DataLoader with 2 workers."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from conftest import shared_path
from dlkdd.config import ClipConfig, DataConfig
from dlkdd.data.dataset import ClipDataset, collate
from dlkdd.data.manifest import manifest_from_config
from dlkdd.data.views import CenterView, RandomView, View, load_clip

CLIP = ClipConfig(frames=4, stride=2, size=24, resize=28, min_scale=0.8, max_scale=1.0, flip=True)


def _manifest():
    d = shared_path("arid6")
    cfg = DataConfig(format="arid", root=str(d / "clips"), train_list=str(d / "arid6_train.txt"),
                     test_list=str(d / "arid6_test.txt"), mapping=str(d / "mapping_table.txt"))
    return manifest_from_config(cfg, "train")


def test_sample_and_reproducible_views():
    m = _manifest().subset(range(0, 108, 27))
    ds = ClipDataset(m, CLIP, RandomView(CLIP, seed=3))
    s = ds[1]
    assert s["video"].shape == (3, 4, 24, 24) and s["video"].dtype == torch.float32
    assert s["label"] == m[1].label and s["key"] == m[1].key and s["index"] == 1
    assert s["view"].dtype == torch.float64 and s["view"].shape == (8,)
    assert torch.equal(ds[1]["video"], s["video"])  # same (seed, epoch, index) -> same clip
    # the stored view replays exactly
    assert torch.equal(load_clip(m[1].path, View.from_array(s["view"].numpy()), CLIP.size), s["video"])
    views_e0 = [ds[i]["view"] for i in range(len(ds))]
    ds.set_epoch(1)
    views_e1 = [ds[i]["view"] for i in range(len(ds))]
    assert any(not torch.equal(a, b) for a, b in zip(views_e0, views_e1))
    ev = ClipDataset(m, CLIP, CenterView(CLIP))
    v = View.from_array(ev[0]["view"].numpy())
    assert not v.flip and abs(v.y0 - (1 - v.h) / 2) < 1e-12


def test_dataloader_two_workers_matches_single_process():
    m = _manifest().subset(range(0, 108, 18))
    ds = ClipDataset(m, CLIP, RandomView(CLIP, seed=0))
    ds.set_epoch(2)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate))
    assert len(batches) == 2
    b = batches[0]
    assert b["video"].shape == (3, 3, 4, 24, 24) and b["label"].dtype == torch.long
    assert b["key"] == m.keys()[:3] and b["view"].shape == (3, 8)
    ref = collate([ds[i] for i in range(3)])  # worker-independent: same as loading in-process
    assert torch.equal(b["video"], ref["video"]) and torch.equal(b["view"], ref["view"])
    # default_collate works too (keys become a list of str)
    d = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    assert d["key"] == m.keys()[:2] and torch.equal(d["video"], ref["video"][:2])
    assert np.isfinite(b["video"].numpy()).all()
