"""Fix hints repeat the user's own --config/--set options (issue 16): a refused cache's rebuild
command can be pasted as is."""
from __future__ import annotations

import click
import numpy as np
from click.testing import CliRunner

from dlkdd.cache.keying import view_spec_from_config
from dlkdd.cache.match import rebuild_command
from dlkdd.cache.store import LogitStore
from dlkdd.cli import main
from dlkdd.commands.common import config_options
from dlkdd.config import load_config
from dlkdd.data.prepare import prepare_data
from dlkdd.hints import config_args


def test_config_args_outside_and_inside_a_command():
    assert config_args() == "--config <cfg>"  # library use: nothing known
    assert config_args("c.yaml") == "--config c.yaml"
    seen = {}

    @click.command()
    @config_options()
    def cmd(config_path, overrides):
        seen["args"] = config_args()
        seen["cmd"] = rebuild_command(None, "t.pt")

    r = CliRunner().invoke(cmd, ["--config", "my cfg.yaml", "--set", "clip.size=24", "--set", "kd.tau=4"])
    assert r.exit_code == 0, r.output
    assert seen["args"] == "--config 'my cfg.yaml' --set clip.size=24 --set kd.tau=4"
    assert seen["cmd"] == "dlkdd cache-logits --config 'my cfg.yaml' --set clip.size=24 --set kd.tau=4 --teacher t.pt"


def test_student_refusing_a_cache_repeats_the_set_options(tmp_path):
    ds = tmp_path / "ds"
    r = CliRunner().invoke(main, ["synth", str(ds), "--classes", "2", "--clips-per-class", "2", "--frames", "4",
                                  "--height", "16", "--width", "16"])
    assert r.exit_code == 0, r.output
    cfg_path = str(ds / "config.yaml")
    cfg = load_config(cfg_path)
    train = prepare_data(cfg, progress=False).train
    spec = view_spec_from_config(cfg, views=1)  # built at the config's own clip size
    meta = {"classes": list(train.classes), "teacher_sha256": "34" * 32, "manifest_sha256": train.sha256(),
            "teacher_kind": "dlkdd", "clip": spec["clip"], "view_seed": spec["view_seed"],
            "config": cfg.to_dict(), "teacher_path": "runs/t/teacher.pt"}
    keys = [str(k) for k in train.keys()]
    store = tmp_path / "c.zarr"
    with LogitStore.create(store, keys, 1, len(train.classes), meta) as s:
        s.write_many(list(range(len(keys))), np.zeros((len(keys), 1, len(train.classes))),
                     np.zeros((len(keys), 1, 8)))
        s.mark_complete()
    size = int(cfg.clip.size) // 2
    r = CliRunner().invoke(main, ["student", "--config", cfg_path, "--set", f"clip.size={size}",
                                  "--set", "train.epochs=1", "--cache", str(store), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1, r.output
    assert f"clip.size differs: store {cfg.clip.size} vs config {size}" in r.output
    assert (f"dlkdd cache-logits --config {cfg_path} --set clip.size={size} --set train.epochs=1 "
            f"--teacher runs/t/teacher.pt") in r.output
