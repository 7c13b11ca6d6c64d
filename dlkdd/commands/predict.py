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
@click.option("--window-stride", type=click.IntRange(min=0), default=0,
              help="Frames between sliding windows (default 0: half a clip).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp32"]), default=None,
              help="Precision (default: the checkpoint's train.amp).")
@friendly_errors
def predict(checkpoint, videos, topk, window_stride, as_json, amp):
    """Top-k labels with probabilities for one or more videos (sliding windows on long ones).

    CHECKPOINT: a dlkdd checkpoint, or a model exported by `dlkdd export` (ONNX / TorchScript). A pose
    checkpoint poses the videos first as its training data was (its enhancer, BlazePose; in the pose
    environment when mediapipe is not importable here)."""
    from dlkdd.pipeline.evaluate import PredictOptions, format_predictions, load_model, predict_videos
    from dlkdd.utils import resolve_device

    if topk < 1:
        raise click.BadParameter(f"must be >= 1, got {topk}", param_hint="--topk")
    urls = [v for v in videos if "://" in v]
    if urls:
        raise click.BadParameter(f"{urls[0]}: a URL; dlkdd reads local video files only (nothing is downloaded at "
                                 f"run time): download it first", param_hint="VIDEOS")
    dev = resolve_device(get_device())
    model, ckpt = load_model(checkpoint, dev)
    from dlkdd.errors import DlkddError

    opts = PredictOptions(topk=topk, window_stride=window_stride, amp=amp)
    results, failed = [], []
    for r in predict_videos(model, ckpt, videos, dev, opts):  # a bad video is reported; the others are still scored
        if isinstance(r, DlkddError):
            if len(videos) == 1:
                raise r
            failed.append(str(r))
        else:
            results.append(r)
    if results:
        click.echo(json.dumps(results, indent=2, allow_nan=False) if as_json else format_predictions(results))
    if failed:
        for msg in failed:
            click.echo(f"Error: {msg}", err=True)
        raise click.ClickException(f"{len(failed)} of {len(videos)} videos could not be scored (listed above)")
