"""``dlkdd pretrain``: student pre-training, self-supervised (ActLumos stage 1: InfoNCE, two views) or on
synthetic motion videos (``--set pretrain.task=motion``); calls :func:`dlkdd.pipeline.pretrain.pretrain_student`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dlkdd.commands.common import (check_run_outputs, config_options, data_inputs, fmt_pct, friendly_errors,
                                   get_device, load_cli_config)


@click.command()
@config_options()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (OUT/pretrain.pt).")
@click.option("--resume", type=click.Path(), default=None, help="Continue an interrupted run from its directory.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def pretrain(config_path, overrides, out, resume, no_progress):
    """Pre-train the student trunk: without labels on the dark clips, or on synthetic motion.

    pretrain.task=ssl (default, ActLumos stage 1): two random views of each clip (crop, scale, flip,
    temporal offset), InfoNCE between their projections (pretrain.epochs, pretrain.lr,
    pretrain.temperature, pretrain.proj_dim). pretrain.task=motion: classify 8 kinds of motion in
    procedurally generated dark videos (pretrain.motion_clips new clips per epoch; nothing downloaded).
    Then: dlkdd student ... --set model.pretrained=OUT/pretrain.pt
    """
    from dlkdd.pipeline.pretrain import pretrain_student

    cfg = load_cli_config(config_path, overrides)
    check_run_outputs(out, "pretrain.pt", data_inputs(cfg, config_path))
    res = pretrain_student(cfg, out, device=get_device(), resume=resume, progress=not no_progress)
    ckpt = Path(out) / "pretrain.pt"
    click.echo(f"{_summary(cfg, res, ckpt)}  (next: dlkdd student --config {config_path} "
               f"--set model.pretrained={ckpt} ...)")


def _summary(cfg: Any, res: dict, ckpt: Path) -> str:
    """``pretrain: CKPT  <loss and accuracies>`` of a finished pre-training run."""
    tr = res.get("train") or {}
    if cfg.pretrain.task == "motion":
        what = (f"motion loss {tr.get('loss', float('nan')):.4f}  train top-1 {fmt_pct(tr.get('top1'))}  "
                f"held-out synthetic top-1 {fmt_pct(res.get('top1'))}")
    else:
        what = (f"InfoNCE loss {tr.get('loss', float('nan')):.4f}  "
                f"pair acc {tr.get('pair_acc', float('nan')):.1f}%")
    return f"pretrain: {ckpt}  {what}"
