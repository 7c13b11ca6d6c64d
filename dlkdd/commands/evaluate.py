"""``dlkdd evaluate``: any checkpoint on a test list; calls :func:`dlkdd.pipeline.evaluate.evaluate_checkpoint`."""
from __future__ import annotations

from pathlib import Path

import click

from dlkdd.commands.common import friendly_errors, get_device, load_cli_config
from dlkdd.data.formats import list_formats


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Evaluate on this config's test list.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (repeatable).")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Dataset root (without --config).")
@click.option("--list", "list_path", type=click.Path(dir_okay=False), default=None, help="Test list (without --config).")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None, help="Class table (without --config).")
@click.option("--format", "fmt", type=click.Choice(list_formats()), default="arid", show_default=True,
              help="List format (without --config).")
@click.option("--clips", type=int, default=1, show_default=True, help="Temporal clips per video (multi-view test).")
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True, help="Spatial crops per clip.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Confusion-matrix PNG (default: beside --json, or none).")
@click.option("--predictions", "pred_out", type=click.Path(dir_okay=False), default=None,
              help="Write per-clip predictions (key, label, predicted, top-k, probabilities): .jsonl or .csv "
                   "(for `dlkdd compare`).")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp32"]), default=None,
              help="Precision (default: the checkpoint's train.amp; auto: bf16 on CUDA and CPUs with native bf16).")
@click.option("--no-progress", is_flag=True)
@friendly_errors
def evaluate(checkpoint, config_path, overrides, root, list_path, mapping, fmt, clips, crops, json_out, plot, workers,
             amp, no_progress, pred_out):
    """Top-1, top-5, per-class accuracy and confusion matrix of any dlkdd checkpoint (or exported model)."""
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import evaluate_checkpoint, plot_confusion

    if clips < 1:
        raise click.BadParameter(f"must be >= 1, got {clips}", param_hint="--clips")
    from dlkdd.outputs import check_writable_file

    for opt, out_path in (("--json", json_out), ("--plot", plot), ("--predictions", pred_out)):
        if out_path:  # before scoring, not after
            check_writable_file(out_path, opt)
    if config_path:
        cfg = load_cli_config(config_path, overrides)
        data_cfg = cfg.data
    elif list_path and (mapping or fmt == "csv"):  # a CSV list names its classes itself
        from dlkdd.config import DataConfig

        data_cfg = DataConfig(format=fmt, root=root or "", test_list=list_path, mapping=mapping or "")
    else:
        raise click.UsageError("give --config C, or --root R --list L --mapping M (--mapping is optional with "
                               "--format csv)")
    # the checkpoint's clip settings are used, except the clip.* keys given with --set
    clip_items = [o for o in overrides if o.split("=", 1)[0].strip().startswith("clip.")]
    csv_classes = not config_path and fmt == "csv" and not mapping  # the checkpoint's classes, in its order
    ckpt = _checkpoint_dict(checkpoint) if clip_items or csv_classes else {}  # read here only when needed
    clip_cfg = _clip_overrides(ckpt, clip_items)
    # every clip is checked first (a corrupt clip may decode far enough to be scored silently):
    # data.on_bad_clip=error (default) lists the bad ones and stops, skip evaluates without them
    from dlkdd.data.prepare import apply_bad_clip_policy

    if csv_classes:
        from dlkdd.data.manifest import read_csv

        manifest = read_csv(list_path, root or "", ckpt.get("classes") or None, check_files=False)
    else:
        manifest = manifest_from_config(data_cfg, "test", check_files=False)
    manifest = apply_bad_clip_policy(manifest, data_cfg.on_bad_clip, progress=not no_progress, decode=True)
    m = evaluate_checkpoint(checkpoint, manifest, device=get_device(), clips=clips, crops=int(crops), workers=workers,
                            clip_cfg=clip_cfg, progress=not no_progress, amp=amp)
    click.echo(f"{checkpoint}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  (n={m['n']}, "
               f"{clips} clip(s) x {crops} crop(s))")
    for c, a in zip(m["classes"], m["per_class"]):
        click.echo(f"  {c:<24} {'n/a' if a is None else f'{a:6.2f}%'}")
    if pred_out:
        from dlkdd.predictions import Predictions, write_predictions

        rows = m["predictions"]
        p = Predictions([r["key"] for r in rows], [r["label"] for r in rows], [r["probs"] for r in rows],
                        m["classes"], {"views": m["test_views"], "checkpoint": str(checkpoint), "kind": m["kind"], "seed": m["seed"],
                                       "top1": m["top1"]})
        click.echo(f"predictions: {write_predictions(pred_out, p)}")
    if json_out:
        from dlkdd.utils import atomic_write_json

        atomic_write_json(json_out, m)
        click.echo(f"metrics: {json_out}")
        plot = plot or str(Path(json_out).with_suffix(".png"))
    if plot:
        click.echo(f"confusion matrix: {plot_confusion(m, plot)}")


def _checkpoint_dict(path: str) -> dict:
    """The checkpoint dict of ``path`` (read once for the command's own needs), or an exported model's
    checkpoint-like view (its classes and clip spec), so ``evaluate`` takes both without building a model."""
    from dlkdd.deploy.runtime import detect_format, load_exported
    from dlkdd.train.checkpoint import load_checkpoint

    return load_exported(path).as_checkpoint() if detect_format(path) is not None else load_checkpoint(path)


def _clip_overrides(ckpt: dict, items: list[str]):
    """The checkpoint's clip settings with the ``clip.*`` keys of ``--set`` (``items``) applied (announced),
    or None without any."""
    if not items:
        return None
    from dlkdd.config import ConfigError, config_from_dict

    try:
        cfg = config_from_dict(ckpt.get("config") or {}, items)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None
    click.echo(f"scoring with the checkpoint's clip settings changed by --set {' '.join(items)}", err=True)
    return cfg.clip
