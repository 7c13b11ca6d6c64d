"""Clip settings beyond what the model or the machine takes are refused with one line, before scoring:
more frames than a BERT head's position embeddings (``evaluate --set clip.frames=600``), and clips too
big for memory (``--set clip.frames=100000000``) in ``evaluate`` and ``cache-logits`` (no store left), and a
training batch too big for memory (refused before training; the estimate scales with the clip settings)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


@pytest.fixture(scope="module")
def bert_ckpt(work, cfg):
    return faults.make_checkpoint(work / "bert.pt", cfg, extra_sets=["model.head=bert"])


def test_more_frames_than_the_bert_head_takes(bert_ckpt, cfg):
    count("clip too long")
    err = assert_clean_error(_invoke(["evaluate", bert_ckpt, "--config", cfg, "--set", "clip.frames=600", "--set",
                                      "clip.stride=1", "--no-progress"]), "at most 512 frames", "clip.frames")
    assert "600" in err


def test_bert_head_error_is_a_dlkdd_error_and_a_value_error():
    import torch

    from dlkdd.errors import DlkddError
    from dlkdd.models.bert_head import BertHead

    head = BertHead(8, 2, max_tokens=4)
    with pytest.raises(DlkddError, match="5 temporal tokens exceed its 4"):
        head(torch.zeros(1, 8, 5, 1, 1))
    with pytest.raises(ValueError):
        head(torch.zeros(1, 8, 5, 1, 1))


def test_evaluate_with_a_clip_too_big_for_memory(ckpt, cfg):
    count("clip too big")
    assert_clean_error(_invoke(["evaluate", ckpt, "--config", cfg, "--set", "clip.frames=100000000",
                                "--no-progress"]), "clip.frames=100000000", "GiB", "lower clip.frames")


def test_cache_logits_with_a_clip_too_big_for_memory_leaves_no_store(work, cfg):
    teacher = faults.make_checkpoint(work / "teacher.pt", cfg, kind="teacher")
    out = work / "huge.zarr"
    count("clip too big")
    assert_clean_error(_invoke(["cache-logits", "--config", cfg, *sets(), "--set", "clip.frames=100000000",
                                "--teacher", teacher, "--out", out, "--no-progress"]), "GiB", "lower clip.frames")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------

def test_huge_clip_refused_before_training(work, cfg):
    count("bad config")
    err = assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(), "--set", "clip.frames=100000000",
                                      "--out", work / "huge", "--no-progress"]), "clip.frames=100000000",
                             "train.batch_size")
    assert "GiB" in err and not (work / "huge" / "last.pt").exists()


def test_estimate_scales_with_the_keys():
    from dlkdd.config import load_config
    from dlkdd.errors import ResourceError
    from dlkdd.train.rundir import check_batch_memory, estimate_batch_bytes

    c = load_config(None, ["clip.frames=16", "clip.size=112", "train.batch_size=8", "train.workers=0"])
    assert estimate_batch_bytes(c, "cpu") > estimate_batch_bytes(c, "cuda") >= 8 * 3 * 16 * 112 * 112 * 4
    check_batch_memory(c, "cpu", available=64 * 2**30)
    with pytest.raises(ResourceError, match="clip.size=112"):
        check_batch_memory(c, "cpu", available=2**20)
