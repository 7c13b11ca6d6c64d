"""``dlkdd synth``: a small synthetic low-light action set in ARID format (:mod:`dlkdd.data.synth`)."""
from __future__ import annotations

import click

from dlkdd.commands.common import friendly_errors


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(1, 8), default=4, show_default=True, help="Number of action classes.")
@click.option("--clips-per-class", type=click.IntRange(2), default=6, show_default=True,
              help="At least 2: every class gets training and test clips.")
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

    try:  # replaces only the files of a set it wrote there itself (its .dlkdd-synth.json); refuses anything else
        paths = make_synthetic(out_dir, classes=classes, clips_per_class=clips_per_class, frames=frames,
                               size=(height, width), seed=seed)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"wrote {classes} classes x {clips_per_class} clips to {paths['root']}")
    for k in ("train_list", "test_list", "mapping", "config"):
        click.echo(f"  {k}: {paths[k]}")
