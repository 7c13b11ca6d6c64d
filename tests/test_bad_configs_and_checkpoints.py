"""Bad configs, bad checkpoints and hostile files, end to end through the CLI.

- Configs: an unknown key, a wrong type or a value out of range is rejected when the config
  loads (before any data is read), naming the key, as a one-line usage error (exit 2).
- Checkpoints: another architecture, another class count, another kind, a newer schema, a
  truncated file, a non-checkpoint, a config from a newer dlkdd: a clear one-line error.
- Security: a checkpoint that would run code when unpickled is refused at every load site
  (``evaluate``, ``predict``, ``cache-logits --teacher``, ``--resume``, ``model.pretrained``,
  ``enhancer.weights``, ``enhance --weights``) and its code never runs; every ``torch.load`` in
  dlkdd uses ``weights_only=True`` (the official Zero-DCE ``Epoch99.pth`` included); a logit
  store's metadata is JSON only: code-looking strings stay strings, a pickled blob is refused.
- Set-up: duplicate class names, config paths relative to the config file (presets still found from
  the repository root), a degenerate normalisation named.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import faults
from conftest import shared_path
from dlkdd.cli import main
from faults import assert_clean_error, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _invoke(args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


# ------------------------------------------------------------------------------------ configs
NOWHERE = {"data": {"train_list": "/nonexistent/train.txt", "mapping": "/nonexistent/map.txt"}}

CASES = [  # (yaml tree merged over NOWHERE, --set overrides, key named, what is said)
    ({"trian": {"epochs": 1}}, [], "'trian'", "unknown config key"),
    ({"train": {"lrr": 0.1}}, [], "'train.lrr'", "unknown config key"),
    ({}, ["kd.temperature=3"], "'kd.temperature'", "unknown config key"),
    ({}, ["train.epochs=abc"], "'train.epochs'", "expected an integer"),
    ({"kd": {"tau": [1, 2]}}, [], "'kd.tau'", "expected a number"),
    ({}, ["clip.flip=maybe"], "'clip.flip'", "expected a boolean"),
    ({"kd": 5}, [], "'kd'", "expected a mapping"),
    ({}, ["kd.tau=-1"], "'kd.tau'", "must be > 0"),
    ({"kd": {"tau": 0}}, [], "'kd.tau'", "must be > 0"),
    ({}, ["kd.gamma=0"], "'kd.gamma'", "(0, 1]"),
    ({}, ["kd.gamma=1.5"], "'kd.gamma'", "(0, 1]"),
    ({}, ["kd.alpha=-0.5"], "'kd.alpha'", "must be >= 0"),
    ({}, ["kd.alpha=.nan"], "'kd.alpha'", "must be finite"),
    ({"cache": {"views": 0}}, [], "'cache.views'", "must be >= 1"),
    ({}, ["clip.frames=0"], "'clip.frames'", "must be >= 1"),
    ({}, ["clip.size=64", "clip.resize=32"], "'clip.resize'", "must be >="),
    ({}, ["train.lr=-1e-4"], "'train.lr'", "must be > 0"),
    ({}, ["train.batch_size=0"], "'train.batch_size'", "must be >= 1"),
    ({}, ["train.step_gamma=0"], "'train.step_gamma'", "must be > 0"),
    ({}, ["model.head=transformer"], "'model.head'", "must be one of"),
    ({}, ["data.on_bad_clip=ignore"], "'data.on_bad_clip'", "must be one of"),
]


@pytest.mark.parametrize("tree,overrides,key,said", CASES, ids=[c[2].strip("'") + ":" + c[3] for c in CASES])
def test_bad_config_rejected_at_load_naming_the_key(work, tree, overrides, key, said):
    cfg = work / "c.yaml"
    merged = {**NOWHERE, **tree}
    cfg.write_text(yaml.safe_dump(merged))
    count("bad config")
    r = _invoke(["teacher", "--config", cfg, *sets(overrides, ()), "--out", work / "never"])
    err = assert_clean_error(r, key, said, rc=2)  # a usage error, before any data is read
    assert "/nonexistent" not in err and not (work / "never").exists()


def test_bad_cli_values_rejected_naming_the_option(work, tiny):
    cfg = tiny / "config.yaml"
    count("bad config", 4)
    assert_clean_error(_invoke(["student", "--config", cfg, "--tau", "-2", "--no-kd", "--out", work / "n"]),
                       "'kd.tau'", "must be > 0", rc=2)
    assert_clean_error(_invoke(["student", "--config", cfg, "--gamma", "2", "--no-kd", "--out", work / "n"]),
                       "'kd.gamma'", rc=2)
    assert_clean_error(_invoke(["cache-logits", "--config", cfg, "--views", "0", "--teacher", work / "t.pt"]),
                       "--views", "must be >= 1", rc=2)
    assert_clean_error(_invoke(["teacher", "--config", cfg, "--set", "train.epochs", "--out", work / "n"]),
                       "key=value", rc=2)


def test_unreadable_or_malformed_config_files(work):
    bad_yaml = work / "bad.yaml"
    bad_yaml.write_text("train:\n  epochs: [1, 2\n  lr: 3\n")
    listy = work / "list.yaml"
    listy.write_text("- train\n- kd\n")
    count("bad config", 4)
    for path, said in ((bad_yaml, "not valid YAML"), (listy, "top level must be a mapping"),
                       (work / "missing.yaml", "config file not found"), (work, "is a directory")):
        err = assert_clean_error(_invoke(["teacher", "--config", path, "--out", work / "never"]), str(path), said)
        assert err.count("\n") == 0


def test_valid_boundaries_load():
    """The limits are inclusive where the paper allows: gamma = 1, alpha = 0, one view."""
    from dlkdd.config import load_config

    cfg = load_config(None, ["kd.gamma=1", "kd.alpha=0", "cache.views=1", "kd.tau=0.5"])
    assert (cfg.kd.gamma, cfg.kd.alpha, cfg.cache.views, cfg.kd.tau) == (1.0, 0.0, 1, 0.5)


# ------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def ckpts(work, tiny) -> dict[str, Path]:
    """A tiny teacher, its truncated and newer-schema copies, a 3-class set, a student."""
    d = work / "ckpt"
    d.mkdir()
    out = {"teacher": faults.make_checkpoint(d / "teacher.pt", tiny / "config.yaml", kind="teacher"),
           "student": faults.make_checkpoint(d / "student.pt", tiny / "config.yaml")}
    data = out["teacher"].read_bytes()
    (d / "truncated.pt").write_bytes(data[: int(len(data) * 0.4)])
    out["truncated"] = d / "truncated.pt"
    ck = torch.load(out["student"], weights_only=True)
    torch.save(dict(ck, schema_version=99, dlkdd_version="9.0.0"), d / "newer.pt")
    out["newer"] = d / "newer.pt"
    cfg = dict(ck["config"])
    cfg["model"] = dict(cfg["model"], hologram=True)  # a config key from a newer dlkdd
    torch.save(dict(ck, config=cfg), d / "newer_config.pt")
    out["newer_config"] = d / "newer_config.pt"
    (d / "text.pt").write_text("not a checkpoint\n")
    out["text"] = d / "text.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, d / "state_dict.pt")
    out["state_dict"] = d / "state_dict.pt"
    three = faults.make_tiny_set(work / "three", classes=3, clips_per_class=3)
    out["three"] = three / "config.yaml"
    return out


def test_truncated_checkpoint_detected_everywhere(work, tiny, ckpts):
    t = ckpts["truncated"]
    clip = next((tiny / "clips" / "Jump").glob("*.mp4"))
    count("bad checkpoint", 4)
    for args in (["evaluate", t, "--config", tiny / "config.yaml", "--workers", "0", "--no-progress"],
                 ["predict", t, clip],
                 ["cache-logits", "--config", tiny / "config.yaml", *sets(), "--teacher", t, "--out", work / "x.zarr",
                  "--no-progress"]):
        assert_clean_error(_invoke(args), str(t), "truncated or corrupt checkpoint")
    run = work / "run_truncated"
    run.mkdir()
    shutil.copy(t, run / "last.pt")
    assert_clean_error(_invoke(["teacher", "--config", tiny / "config.yaml", *sets(), "--out", run, "--resume", run,
                                "--no-progress"]), str(run / "last.pt"), "truncated or corrupt checkpoint")


def test_checkpoint_of_another_architecture_class_count_kind_or_schema(work, tiny, ckpts):
    clip = next((tiny / "clips" / "Jump").glob("*.mp4"))
    count("bad checkpoint", 8)
    # another architecture: resume an avg-head run with a BERT head
    run = work / "run_arch"
    run.mkdir()
    torch.save(dict(torch.load(ckpts["student"], weights_only=True), kind="baseline"), run / "last.pt")
    err = assert_clean_error(_invoke(["student", "--config", tiny / "config.yaml", *sets(extra=["model.head=bert"]),
                                      "--no-kd", "--out", run, "--resume", run, "--no-progress"]),
                             str(run / "last.pt"), "do not fit this model")
    assert "head." in err
    # another kind: a student where a teacher is needed
    assert_clean_error(_invoke(["cache-logits", "--config", tiny / "config.yaml", *sets(), "--teacher",
                                ckpts["student"], "--out", work / "y.zarr", "--no-progress"]),
                       "kind is 'student', expected 'teacher'")
    # another class count: a 2-class teacher on 3-class data, and evaluation on a 3-class list
    assert_clean_error(_invoke(["cache-logits", "--config", ckpts["three"], *sets(), "--teacher", ckpts["teacher"],
                                "--out", work / "z.zarr", "--no-progress"]),
                       str(ckpts["teacher"]), "class count is 2, the data has 3")
    assert_clean_error(_invoke(["evaluate", ckpts["student"], "--config", ckpts["three"], "--workers", "0",
                                "--no-progress"]), "was trained on classes")
    # a newer schema, a config key from a newer dlkdd, not a checkpoint at all
    assert_clean_error(_invoke(["predict", ckpts["newer"], clip]), "checkpoint schema 99", "upgrade dlkdd")
    assert_clean_error(_invoke(["predict", ckpts["newer_config"], clip]), "'model.hologram'")
    assert_clean_error(_invoke(["predict", ckpts["text"], clip]), str(ckpts["text"]))
    assert_clean_error(_invoke(["predict", ckpts["state_dict"], clip]), "not a dlkdd checkpoint")
    for p in (work / "y.zarr", work / "z.zarr"):
        assert not p.exists()


# ------------------------------------------------------------------------------------ security
class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_checkpoint_refused_at_every_load_site_and_never_runs(work, tiny, ckpts):
    marker = work / "PWNED"
    evil = work / "evil.pt"
    ck = torch.load(ckpts["student"], weights_only=True)
    torch.save(dict(ck, extra={"x": _Payload(marker)}), evil)
    clip = next((tiny / "clips" / "Jump").glob("*.mp4"))
    run = work / "run_evil"
    run.mkdir()
    shutil.copy(evil, run / "last.pt")
    cfg = tiny / "config.yaml"
    sites = [
        ["evaluate", evil, "--config", cfg, "--workers", "0", "--no-progress"],
        ["predict", evil, clip],
        ["cache-logits", "--config", cfg, *sets(), "--teacher", evil, "--out", work / "e.zarr", "--no-progress"],
        ["student", "--config", cfg, *sets(), "--no-kd", "--out", run, "--resume", run, "--no-progress"],
        ["student", "--config", cfg, *sets(extra=[f"model.pretrained={evil}"]), "--no-kd", "--out", work / "e1",
         "--no-progress"],
        ["teacher", "--config", cfg, *sets(extra=["enhancer.kind=zerodce", f"enhancer.weights={evil}"]),
         "--out", work / "e2", "--no-progress"],
        ["enhance", clip, work / "e.mp4", "--weights", evil],
    ]
    for args in sites:
        count("hostile checkpoint")
        err = assert_clean_error(_invoke(args), str(run / "last.pt") if "--resume" in args else str(evil))
        assert not marker.exists(), f"code ran: {args[0]}"
        assert "weights_only" in err or "cannot" in err or "safely" in err, err
    # the payload is live: an unsafe load would have run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_every_torch_load_is_weights_only(tiny, ckpts, monkeypatch):
    from dlkdd.models.r2plus1d import build_r2plus1d, load_pretrained
    from dlkdd.models.zerodce import load_zerodce_state_dict
    from dlkdd.train.checkpoint import load_checkpoint

    calls = []
    real = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(ckpts["student"])
    sd = load_zerodce_state_dict(shared_path("zerodce", "Epoch99.pth"))  # the official legacy pickle
    assert sorted(sd)[0] == "e_conv1.bias"
    with pytest.raises(Exception):
        load_pretrained(build_r2plus1d("r2plus1d_18", 2), ckpts["state_dict"])
    assert calls == [True, True, True]


def test_store_metadata_is_never_executed(work, tiny):
    import h5py
    import pickle

    from dlkdd.cache.store import LogitStore

    marker = work / "PWNED_META"
    code = [f"__import__('os').system('touch {marker}')", f"!!python/object/apply:os.system ['touch {marker}']"]
    z = work / "meta_code.zarr"
    LogitStore.create(z, ["Jump/a", "Walk/b"], 1, 2, {"classes": ["Jump", "Walk"], "note": code}).close()
    h = work / "meta_pickle.h5"
    LogitStore.create(h, ["Jump/a"], 1, 2, {"classes": ["Jump", "Walk"]}).close()
    with h5py.File(h, "r+") as f:
        f.attrs["dlkdd_meta"] = __import__("numpy").void(pickle.dumps(_Payload(marker)))
    count("hostile store", 2)
    r = _invoke(["cache", "info", z])
    assert r.exit_code == 0 and json.loads(r.output)["note"] == code  # plain strings, shown as such
    r = _invoke(["cache", "verify", z])
    assert r.exit_code == 1 and "not complete" in r.output
    assert_clean_error(_invoke(["cache", "info", h]), str(h))
    r = _invoke(["cache", "ls", work])
    assert r.exit_code == 0 and "meta_pickle.h5" in r.output and "unreadable" in r.output
    assert_clean_error(_invoke(["student", "--config", tiny / "config.yaml", *sets(), "--cache", h,
                                "--out", work / "m", "--no-progress"]), str(h))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------

def test_duplicate_class_names_refused(tmp_path):
    from dlkdd.data.manifest import read_class_table
    from dlkdd.errors import DataError

    m = tmp_path / "mapping_table.txt"
    m.write_text("0\tJump\n1\tRun\n2\tJump\n")
    count("bad input")
    with pytest.raises(DataError, match="'Jump' listed twice"):
        read_class_table(m)


def test_relative_config_paths(tmp_path, monkeypatch):
    from dlkdd.config import load_config

    d = tmp_path / "proj"
    d.mkdir()
    (d / "train.txt").write_text("")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "only_here.txt").write_text("")
    (d / "c.yaml").write_text("data:\n  train_list: train.txt\n  test_list: only_here.txt\n  mapping: nowhere.txt\n")
    monkeypatch.chdir(tmp_path / "cwd")
    c = load_config(d / "c.yaml", ["data.root=clips"])
    assert c.data.train_list == str(d / "train.txt")  # beside the config file
    assert c.data.test_list == str(tmp_path / "cwd" / "only_here.txt")  # only under the working directory
    assert c.data.mapping == str(d / "nowhere.txt")  # neither: the config-relative path, shown in errors
    assert c.data.root == str(tmp_path / "cwd" / "clips")  # --set: the working directory
    assert Path(c.enhancer.weights).is_absolute()


def test_presets_still_resolve_from_the_repo_root(monkeypatch):
    from conftest import shared_path

    from dlkdd.config import load_config

    shared_path("arid6")
    monkeypatch.chdir(faults.REPO)
    c = load_config("configs/arid6-mini.yaml")
    assert Path(c.data.train_list).is_file() and Path(c.enhancer.weights).is_file()


def test_degenerate_normalisation_named(tmp_path):
    from dlkdd.config import ConfigError, load_config
    from dlkdd.train.engine import _nan_hint

    count("bad config")
    with pytest.raises(ConfigError, match="model.std.*overflow"):
        load_config(None, ["model.std=[1e-40,0.1,0.1]"])
    assert "not the cause" in _nan_hint(0, 0) and "model.std" in _nan_hint(0, 0)
    assert "Lower train.lr" in _nan_hint(2, 5)
