"""``dlkdd teacher``: calls :func:`dlkdd.pipeline.teacher.train_teacher`."""
from __future__ import annotations

from pathlib import Path

import click

from dlkdd.commands.common import (check_run_outputs, config_options, data_inputs, fmt_pct, friendly_errors, get_device,
                                   is_rank0, load_cli_config, warn_test_clips_in_train)


@click.command()
@config_options()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (OUT/teacher.pt).")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue an interrupted run from its directory (its last.pt).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def teacher(config_path, overrides, out, resume, no_progress):
    """Train the teacher: frozen light enhancer -> R(2+1)D-BERT, cross-entropy on enhanced clips."""
    from dlkdd.pipeline.teacher import train_teacher

    cfg = load_cli_config(config_path, overrides)
    warn_test_clips_in_train(cfg)
    check_run_outputs(out, "teacher.pt", data_inputs(cfg, config_path))
    res = train_teacher(cfg, out, device=get_device(), resume=resume, progress=not no_progress)
    if is_rank0():
        click.echo(f"teacher: {Path(out) / 'teacher.pt'}  val top-1 {fmt_pct(res.get('top1'))}  top-5 {fmt_pct(res.get('top5'))}")
