"""Decoded views stored beside the logits (cache.clips, dlkdd.cache.clips): the teacher scores the
stored uint8 clips, the student reads them back instead of decoding - the same tensor, bit for bit -
and a killed cache-logits run resumes to the same clips and logits."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dlkdd.errors import CacheError


@pytest.fixture(scope="module")
def setup(module_dir):
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.synth import make_synthetic
    from dlkdd.models.build import build_teacher, teacher_arch
    from dlkdd.train.checkpoint import save_checkpoint

    d = module_dir
    paths = make_synthetic(d / "data", classes=2, clips_per_class=4, frames=12, size=(32, 40), seed=4)
    sets = ["clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=36", "enhancer.kind=gamma",
            "model.head=avg", "model.backbone=r2plus1d_tiny", "cache.views=3", "cache.batch_size=4", f"cache.dir={d / 'cache'}", "train.workers=0",
            "train.amp=fp32", "cache.clips=true"]
    cfg = load_config(paths["config"], sets)
    train = manifest_from_config(cfg.data, "train")
    torch.manual_seed(0)
    teacher = build_teacher(cfg, len(train.classes))
    ckpt = save_checkpoint(d / "teacher.pt", kind="teacher", arch=teacher_arch(cfg, len(train.classes)),
                           config=cfg.to_dict(), classes=list(train.classes), model=teacher.state_dict(), epoch=0)
    store = precompute_logits(cfg, ckpt, out=d / "ref.zarr", device="cpu", progress=False)
    return {"dir": d, "cfg": cfg, "teacher": ckpt, "store": store, "train": train}


def test_student_reads_the_clips_the_teacher_scored_without_decoding(setup, monkeypatch):
    from dlkdd.cache.clips import ClipStore, clip_store_path, dequantize
    from dlkdd.cache.reader import StoreRows
    from dlkdd.data.dataset import ClipDataset
    from dlkdd.data.views import StoredView
    from dlkdd.cache.store import LogitStore
    from dlkdd.data import video as video_mod
    from dlkdd.data import views as views_mod
    from dlkdd.data.views import View, load_clip
    from dlkdd.pipeline.evaluate import load_model

    cfg, train = setup["cfg"], setup["train"]
    with LogitStore.open(setup["store"]) as s:
        assert s.meta["clips"] == "uint8" and s.is_complete
    cs = ClipStore.open(clip_store_path(setup["store"]))
    assert cs.shape == (len(train), 3, 3, 4, 32, 32)
    ds = ClipDataset(train, cfg.clip, StoredView(StoreRows(train, setup["store"]), seed=0))
    decoded = {i: load_clip(train[i].path, View.from_array(ds[i]["view"].numpy()), cfg.clip.size) for i in (0, 5)}

    def no_decoding(*a, **k):
        raise AssertionError("the student decoded a video although the store holds its clips")

    monkeypatch.setattr(video_mod, "VideoReader", no_decoding)
    monkeypatch.setattr(views_mod, "VideoReader", no_decoding)
    teacher, _ = load_model(setup["teacher"])
    for i in (0, 5):
        s = ds[i]
        v = ds.policy.choice(i, ds.epoch)
        assert torch.equal(s["video"], dequantize(cs.read(ds.policy.rows.rows[i], v)))
        # the stored clip is the decoded view rounded to 1/255
        assert float((s["video"] - decoded[i]).abs().max()) <= 0.5 / 255 + 1e-6
        with torch.inference_mode():  # the teacher's stored logits are its output on exactly this tensor
            z = teacher(s["video"][None]).float()[0]
        torch.testing.assert_close(z, s["teacher_logits"], atol=2e-3, rtol=2e-3)


def test_loader_workers_read_stored_clips(setup):
    from torch.utils.data import DataLoader

    from dlkdd.cache.reader import StoreRows
    from dlkdd.data.dataset import ClipDataset
    from dlkdd.data.views import StoredView
    from dlkdd.data.dataset import collate

    ds = ClipDataset(setup["train"], setup["cfg"].clip, StoredView(StoreRows(setup["train"], setup["store"]), seed=0))
    one = [ds[i]["video"] for i in range(len(ds))]
    got = torch.cat([b["video"] for b in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)])
    assert torch.equal(got, torch.stack(one))


def test_killed_run_resumes_to_the_same_clips_and_logits(setup, monkeypatch):
    from dlkdd.pipeline import cache_logits as precompute
    from dlkdd.cache.clips import ClipStore, clip_store_path
    from dlkdd.cache.store import LogitStore

    d = setup["dir"]
    out = d / "killed.zarr"
    real = LogitStore.write_many

    def dies_after_one_row(self, rows, logits, views, features=None):
        real(self, rows[:1], logits[:1], views[:1])
        raise KeyboardInterrupt

    monkeypatch.setattr(LogitStore, "write_many", dies_after_one_row)
    with pytest.raises(KeyboardInterrupt):
        precompute.precompute_logits(setup["cfg"], setup["teacher"], out=out, device="cpu", progress=False)
    monkeypatch.setattr(LogitStore, "write_many", real)
    precompute.precompute_logits(setup["cfg"], setup["teacher"], out=out, device="cpu", progress=False)
    a, b = ClipStore.open(clip_store_path(setup["store"])), ClipStore.open(clip_store_path(out))
    for r in range(a.shape[0]):
        for v in range(a.shape[1]):
            assert np.array_equal(a.read(r, v), b.read(r, v))
    with LogitStore.open(setup["store"]) as x, LogitStore.open(out) as y:
        np.testing.assert_array_equal(x.read_all()[0], y.read_all()[0])


def test_missing_clip_store_is_a_clear_error_and_ls_lists_only_logit_stores(setup, tmp_path):
    from dlkdd.cache.clips import clip_store_path
    from dlkdd.cache.reader import StoreRows
    from dlkdd.data.dataset import ClipDataset
    from dlkdd.data.views import StoredView
    from dlkdd.cache.inspect import list_stores

    store = tmp_path / "s.zarr"
    shutil.copytree(setup["store"], store)
    with pytest.raises(CacheError, match="stored clips of this logit store are missing"):
        StoreRows(setup["train"], store)
    shutil.copytree(clip_store_path(setup["store"]), clip_store_path(store))
    assert [r["path"] for r in list_stores(tmp_path)] == [str(store)]
    ds = ClipDataset(setup["train"], setup["cfg"].clip, StoredView(StoreRows(setup["train"], store), seed=0))
    assert ds[0]["video"].dtype == torch.float32
