"""``dlkdd bench``: cached vs online distillation, inference cost, data path, precompute.

Writes ``--json OUT`` and the Markdown report beside it (``OUT`` with a ``.md`` suffix) and
prints the Markdown. See :mod:`dlkdd.bench` for what is measured and how.
"""
from __future__ import annotations

import click

from dlkdd.commands.common import friendly_errors, get_device


@click.command("bench")
@click.option("--preset", type=click.Choice(["tiny", "mini", "light", "pose", "paper"]), default="mini",
              show_default=True,
              help="tiny: seconds (tests); mini: arid6-mini settings; light: EfficientNet-Lite0 16x112x112 beside "
                   "MobileNetV2 and R(2+1)D-18/34 (issue 24); pose: what posing costs at inference (BlazePose: run "
                   "it with .venv-pose/bin/dlkdd); paper: R(2+1)D-34+BERT 64x112x112.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default="bench-out/bench.json",
              show_default=True, help="JSON output; the Markdown report goes beside it with a .md suffix.")
@click.option("--parts", default="", metavar="LIST",
              help="Comma list of kd,inference,data,precompute,epoch,pose (default: all but pose; paper preset on "
                   "CPU: inference,data; pose preset: pose).")
@click.option("--steps", type=int, default=None, help="Timed steps per KD variant and per student-epoch variant (default: the preset's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting of the preset's config, e.g. --set train.workers=0 (repeatable).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the benchmark's temporary stores / checkpoints here (default: a temp dir, removed).")
@click.option("--threads", type=int, default=0, show_default=True,
              help="torch intra-op threads (0: torch's default). On a CPU shared with other jobs, 1 is steadier.")
@friendly_errors
def bench(preset: str, json_out: str, parts: str, steps: int | None, overrides: tuple[str, ...],
          work_dir: str | None, threads: int) -> None:
    """Benchmark cached vs online KD, inference cost, the data path and teacher precompute."""
    from pathlib import Path

    from dlkdd.bench import run_bench
    from dlkdd.bench.report import markdown_report
    from dlkdd.config import ConfigError
    from dlkdd.utils import atomic_write_json, atomic_write_text

    ctx = click.get_current_context()
    seed = getattr(ctx.obj, "seed", None)
    if threads < 0:
        raise click.BadParameter("must be >= 0", param_hint="--threads")
    if steps is not None and steps < 1:
        raise click.BadParameter("must be >= 1", param_hint="--steps")
    try:
        result = run_bench(preset, parts or None, get_device(ctx), steps, overrides, work_dir, seed, threads or None)
    except (ValueError, ConfigError) as e:
        if isinstance(e, ConfigError):
            raise click.BadParameter(str(e), param_hint="--set") from None
        raise click.UsageError(str(e)) from None
    md = markdown_report(result)
    out = Path(json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), md)
    click.echo(md)
    click.echo(f"wrote {out} and {out.with_suffix('.md')}", err=True)
