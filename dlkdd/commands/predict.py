"""``dlkdd predict``: top-k labels of videos, with sliding windows on long ones; calls
:func:`dlkdd.pipeline.evaluate.predict_video`."""
from __future__ import annotations

import json

import click

from dlkdd.commands.common import friendly_errors, get_device


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("--topk", type=int, default=5, show_default=True)
@click.option("--window-stride", type=int, default=0, help="Frames between sliding windows (default: half a clip).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp32"]), default=None,
              help="Precision (default: the checkpoint's train.amp).")
@friendly_errors
def predict(checkpoint, videos, topk, window_stride, as_json, amp):
    """Top-k labels with probabilities for one or more videos (sliding windows on long ones).

    CHECKPOINT: a dlkdd checkpoint, or a model exported by `dlkdd export` (ONNX / TorchScript)."""
    from dlkdd.pipeline.evaluate import format_predictions, load_model, predict_video
    from dlkdd.utils import resolve_device

    if topk < 1:
        raise click.BadParameter(f"must be >= 1, got {topk}", param_hint="--topk")
    dev = resolve_device(get_device())
    model, ckpt = load_model(checkpoint, dev)
    results = [predict_video(model, ckpt, v, dev, topk=topk, window_stride=window_stride, amp=amp) for v in videos]
    click.echo(json.dumps(results, indent=2) if as_json else format_predictions(results))
