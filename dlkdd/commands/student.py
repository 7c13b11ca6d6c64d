"""``dlkdd student``: the student from the cached logits (or ``--no-kd``: the baseline); calls
:func:`dlkdd.pipeline.student.train_student`."""
from __future__ import annotations

from pathlib import Path

import click

from dlkdd.commands.common import (check_run_outputs, config_options, data_inputs, fmt_pct, friendly_errors, get_device,
                                   is_rank0, load_cli_config, warn_test_clips_in_train)


@click.command()
@config_options()
@click.option("--cache", "cache_path", type=click.Path(), multiple=True,
              help="Logit store from `dlkdd cache-logits` (a .zarr directory or .h5 file). Repeat it to distil "
                   "from several cached teachers (the mean of their softmax(z/tau)).")
@click.option("--cache-weight", "cache_weights", type=float, multiple=True,
              help="With several --cache: one weight per cache, in order (default: equal).")
@click.option("--cache-path-file", type=click.Path(dir_okay=False), default=None,
              help="A text file holding the store path (written by `cache-logits --path-file`).")
@click.option("--no-kd", is_flag=True, help="Cross-entropy only: the 'backbone only' baseline.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (OUT/student.pt).")
@click.option("--alpha", type=float, default=None, help="kd.alpha: initial KD weight alpha_0 (paper 1.5).")
@click.option("--gamma", type=float, default=None, help="kd.gamma: per-epoch decay of alpha (paper 0.95).")
@click.option("--tau", type=float, default=None, help="kd.tau: distillation temperature (paper 5).")
@click.option("--tau2-scale/--no-tau2-scale", default=None, help="Multiply the KL term by tau^2 (Hinton).")
@click.option("--resume", type=click.Path(), default=None, help="Continue an interrupted run from its directory.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def student(config_path, overrides, cache_path, cache_weights, cache_path_file, no_kd, out, alpha, gamma, tau,
            tau2_scale, resume, no_progress):
    """Train the student on the dark clips from the cached teacher logits (never loads the teacher)."""
    from dlkdd.pipeline.student import Targets, train_student

    if cache_path_file and not cache_path:
        p = Path(cache_path_file)
        if not p.is_file():
            raise click.BadParameter(f"{p} does not exist; run `make cache-logits` (or `dlkdd cache-logits "
                                     f"--path-file {p}`) first", param_hint="--cache-path-file")
        cache_path = (p.read_text().strip(),)
    _check_cache_weights(cache_weights, cache_path)
    if no_kd and cache_path:
        raise click.BadParameter("--no-kd trains without the cache; drop --cache", param_hint="--no-kd")
    if not no_kd and not cache_path:
        raise click.BadParameter("give --cache PATH (from `dlkdd cache-logits`) or --no-kd", param_hint="--cache")
    cfg = load_cli_config(config_path, overrides,
                          {"kd.alpha": alpha, "kd.gamma": gamma, "kd.tau": tau, "kd.tau2_scale": tau2_scale})
    warn_test_clips_in_train(cfg)
    check_run_outputs(out, "student.pt", [*data_inputs(cfg, config_path), *cache_path, cache_path_file])
    targets = Targets(tuple(cache_path), list(cache_weights) or None, no_kd, config_path)
    res = train_student(cfg, out, targets, device=get_device(), resume=resume, progress=not no_progress)
    if is_rank0():
        click.echo(f"{'baseline' if no_kd else 'student'}: {Path(out) / 'student.pt'}  "
                   f"val top-1 {fmt_pct(res.get('top1'))}  top-5 {fmt_pct(res.get('top5'))}")


def _check_cache_weights(weights: tuple[float, ...], caches: tuple[str, ...]) -> None:
    """One finite, non-negative weight per cache, not all zero (before ``--out`` is created)."""
    import math

    if not weights:
        return
    if len(weights) != len(caches):
        raise click.BadParameter(f"{len(weights)} weights for {len(caches)} caches: give one per --cache",
                                 param_hint="--cache-weight")
    bad = [w for w in weights if not (math.isfinite(w) and w >= 0)]
    if bad:
        raise click.BadParameter(f"{bad[0]}: each weight must be a finite number >= 0 (a teacher's share of the "
                                 f"ensemble)", param_hint="--cache-weight")
    if sum(weights) <= 0:
        raise click.BadParameter("the weights are all 0: give at least one teacher a weight > 0",
                                 param_hint="--cache-weight")
