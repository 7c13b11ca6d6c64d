"""``dlkdd pose``: the pose stage (decode -> enhancer -> BlazePose -> pose store); calls
:func:`dlkdd.pose.extract.extract_poses` once per (split, enhancer). Needs mediapipe: run it with the
pose environment's dlkdd (``make pose-env``, then ``.venv-pose/bin/dlkdd pose ...``)."""
from __future__ import annotations

import click

from dlkdd.commands.common import config_options, friendly_errors, is_rank0, load_cli_config


@click.command()
@config_options()
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="all", show_default=True,
              help="Which list(s) of the config to pose.")
@click.option("--enhancer", "kinds", type=click.Choice(["none", "gamma", "zerodce"]), multiple=True,
              help="Enhancer of the frames (repeatable). Default: the teacher's (enhancer.kind) and the "
                   "student's (pose.student_enhancer).")
@click.option("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default="zarr", show_default=True)
@click.option("--out", type=click.Path(), default=None,
              help="Store path (one split and one enhancer only; default: content-addressed under pose.store_dir).")
@click.option("--manifest", "manifest_json", type=click.Path(dir_okay=False), default=None, hidden=True,
              help="Pose the clips of this JSON manifest (written by `dlkdd evaluate` for a new list) instead.")
@click.option("--overwrite", is_flag=True, help="Rebuild the store(s) even if they exist.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def pose(config_path, overrides, split, kinds, fmt, out, manifest_json, overwrite, no_progress):
    """Pose every clip once (BlazePose full on enhanced or dark frames) into pose stores."""
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pose.blazepose import model_file
    from dlkdd.pose.extract import PoseOutput, extract_poses

    cfg = load_cli_config(config_path, overrides)
    model_file()  # one line naming `make pose-env` when mediapipe is missing, before any work
    kinds = list(dict.fromkeys(kinds or (cfg.enhancer.kind, cfg.pose.student_enhancer)))
    splits = ["train", "test"] if split == "all" else [split]
    if split != "train" and not cfg.data.test_list:
        splits = [s for s in splits if s == "train"]
    if out and len(kinds) * len(splits) > 1:
        raise click.BadParameter("--out names one store: give one --enhancer and --split train|test", param_hint="--out")
    if manifest_json:  # the clips of one list given by `dlkdd evaluate`, not the config's lists
        jobs = [("list", _read_manifest(manifest_json), manifest_json)]
    else:
        jobs = [(s, manifest_from_config(cfg.data, s, check_files=False), getattr(cfg.data, f"{s}_list")) for s in splits]
    for s, manifest, what in jobs:
        for k in kinds:
            path = extract_poses(cfg, manifest, k, PoseOutput(out, fmt, overwrite, not no_progress, what))
            if is_rank0():
                click.echo(f"{s} {k}: {path}")


def _read_manifest(path: str):
    import json

    from dlkdd.data.manifest import Entry, Manifest

    d = json.loads(open(path, encoding="utf-8").read())
    return Manifest([Entry(k, p, int(y)) for k, p, y in d["entries"]], d["classes"], d["root"])
