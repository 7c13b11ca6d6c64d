"""``dlkdd enhancer``: zero-reference ZeroDCE training; calls :func:`dlkdd.pipeline.enhancer.train_enhancer`."""
from __future__ import annotations

import click

from dlkdd.commands.common import (check_run_outputs, config_options, data_inputs, friendly_errors, get_device,
                                   load_cli_config)


@click.command("enhancer")
@config_options()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory: DIR/enhancer.pt and DIR/metrics.json")
@friendly_errors
def enhancer(config_path: str, overrides: tuple[str, ...], out_dir: str) -> None:
    """Train ZeroDCE zero-reference on the training list's own dark frames.

    Random enhancer.crop crops of enhancer.frames_per_clip frames per video, Adam
    (enhancer.lr), enhancer.epochs epochs; fine-tunes from enhancer.weights when it exists.
    Use the result with --set enhancer.weights=DIR/enhancer.pt.
    """
    from dlkdd.pipeline.enhancer import train_enhancer
    from dlkdd.utils import resolve_device

    cfg = load_cli_config(config_path, overrides)
    check_run_outputs(out_dir, "enhancer.pt", data_inputs(cfg, config_path))
    device = resolve_device(get_device())
    metrics = train_enhancer(cfg, out_dir, device=str(device))
    last = metrics["epochs"][-1]
    click.echo(f"wrote {metrics['checkpoint']} (epoch {last['epoch']}: loss {last['loss']:.5f}, tv {last['tv']:.5f}, "
               f"spa {last['spa']:.5f}, col {last['col']:.5f}, exp {last['exp']:.5f})")
