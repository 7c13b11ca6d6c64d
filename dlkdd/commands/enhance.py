"""``dlkdd enhance``: enhance one video (see what the teacher sees); calls
:func:`dlkdd.pipeline.enhancer.enhance_video`."""
from __future__ import annotations

import click

from dlkdd.commands.common import friendly_errors, get_device


@click.command("enhance")
@click.argument("video", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["zerodce", "gamma", "retinex"]), default="zerodce", show_default=True,
              help="Which enhancer.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="ZeroDCE weights: official Epoch99.pth or a `dlkdd enhancer` enhancer.pt "
                   "[default: ../shared/data/zerodce/Epoch99.pth]")
@click.option("--gamma", type=float, default=None, help="Gamma of --kind gamma [default: 3.0]")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: rows of original | enhanced for ~4 frames")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Only the first N frames.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, help="Frames per batch.")
@friendly_errors
def enhance(video: str, out: str, kind: str, weights: str | None, gamma: float | None, preview: str | None,
            max_frames: int | None, batch: int) -> None:
    """Enhance every frame of VIDEO and write OUT (H.264 MP4, same fps)."""
    from dlkdd.config import ConfigError, EnhancerConfig
    from dlkdd.pipeline.enhancer import enhance_video
    from dlkdd.models.enhancers import build_enhancer
    from dlkdd.outputs import check_outputs, check_writable_file
    from dlkdd.utils import resolve_device

    check_outputs({"OUT": out, "--preview": preview}, [video, weights])  # `enhance v.mp4 v.mp4` would replace its source
    check_writable_file(out, "OUT")
    if preview:
        check_writable_file(preview, "--preview")
    from dlkdd.config import load_config

    # the default weights resolve like a config's (dlkdd/config.py), not against the working directory
    kw = {"kind": kind, "weights": weights if weights is not None else load_config(None).enhancer.weights}
    if gamma is not None:
        kw["gamma"] = gamma
    enh_cfg = EnhancerConfig(**kw)
    try:
        enh_cfg.validate()
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None
    module = build_enhancer(enh_cfg)
    device = resolve_device(get_device())
    res = enhance_video(video, out, module, device=device, batch=batch, max_frames=max_frames, preview=preview)
    click.echo(f"wrote {out}: {res['frames']} frames {res['width']}x{res['height']} @ {res['fps']:.3g} fps, "
               f"mean brightness {res['mean_in']:.3f} -> {res['mean_out']:.3f}"
               + (f"; preview {preview}" if preview else ""))
