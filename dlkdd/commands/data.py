"""``dlkdd synth OUT_DIR`` and ``dlkdd data check --config C``."""
from __future__ import annotations

import click

from dlkdd.commands.common import config_options, friendly_errors, load_cli_config


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(1, 8), default=4, show_default=True, help="Number of action classes.")
@click.option("--clips-per-class", type=click.IntRange(1), default=6, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=40, show_default=True, help="Frames per clip.")
@click.option("--height", type=click.IntRange(16), default=96, show_default=True, help="Frame height (even).")
@click.option("--width", type=click.IntRange(16), default=128, show_default=True, help="Frame width (even).")
@click.option("--seed", type=int, default=0, show_default=True)
@friendly_errors
def synth(out_dir: str, classes: int, clips_per_class: int, frames: int, height: int, width: int, seed: int) -> None:
    """Write a small synthetic low-light action dataset in ARID format to OUT_DIR.

    OUT_DIR/clips/<Class>/*.mp4, mapping_table.txt, train.txt, test.txt and config.yaml
    (use it with --config, or copy its data: section into a preset).
    """
    from dlkdd.data.synth import make_synthetic

    try:
        paths = make_synthetic(out_dir, classes=classes, clips_per_class=clips_per_class, frames=frames,
                               size=(height, width), seed=seed)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"wrote {classes} classes x {clips_per_class} clips to {paths['root']}")
    for k in ("train_list", "test_list", "mapping", "config"):
        click.echo(f"  {k}: {paths[k]}")


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
