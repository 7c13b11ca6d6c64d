"""``dlkdd data check``: decode every clip, list bad ones, print statistics (:mod:`dlkdd.data.check`)."""
from __future__ import annotations

import click

from dlkdd.commands.common import config_options, friendly_errors, load_cli_config


@click.group("data")
def data() -> None:
    """Dataset tools."""


@data.command("check")
@config_options()
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="all", show_default=True)
@click.option("--write-stats", type=click.Path(dir_okay=False), default=None,
              help="Write the training clips' mean/std as a YAML config snippet (model.normalize: dataset).")
@click.option("--stats-frames", type=click.IntRange(1), default=8, show_default=True,
              help="Frames per training clip sampled for the statistics.")
@friendly_errors
def check(config_path: str, overrides: tuple[str, ...], split: str, write_stats: str | None, stats_frames: int) -> None:
    """Decode every clip; list bad ones with the reason; counts and statistics. Exit 1 if any is bad."""
    from dlkdd.data.check import check_dataset
    from dlkdd.utils import atomic_write_text

    cfg = load_cli_config(config_path, overrides)
    report = check_dataset(cfg, split=split, stats_frames=stats_frames, progress=True)
    for line in report.lines():
        click.echo(line)
    if write_stats:
        atomic_write_text(write_stats, report.stats_yaml())
        click.echo(f"wrote {write_stats}")
    if not report.ok:
        raise SystemExit(1)
