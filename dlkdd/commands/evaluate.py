"""``dlkdd evaluate``: any checkpoint on a test list; calls :func:`dlkdd.pipeline.evaluate.evaluate_checkpoint`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from dlkdd.commands.common import check_views_memory, fmt_pct, friendly_errors, get_device, load_cli_config
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
    from dlkdd.pipeline.evaluate import EvalOptions, evaluate_checkpoint

    if clips < 1:
        raise click.BadParameter(f"must be >= 1, got {clips}", param_hint="--clips")
    src = TestSource(config_path, tuple(overrides), root, list_path, mapping, fmt)
    outs = EvalOutputs(json_out, plot or (str(Path(json_out).with_suffix(".png")) if json_out else None), pred_out)
    data_cfg, inputs = _data_config(src)
    outs.check([checkpoint, *inputs])
    manifest, clip_cfg = _test_manifest(checkpoint, src, data_cfg, clips * int(crops), progress=not no_progress)
    opts = EvalOptions(clips=clips, crops=int(crops), workers=workers, clip_cfg=clip_cfg, progress=not no_progress,
                       amp=amp)
    m = evaluate_checkpoint(checkpoint, manifest, device=get_device(), opts=opts)
    _print_metrics(checkpoint, m, clips, crops)
    outs.write(checkpoint, m)


@dataclass(frozen=True)
class TestSource:
    """Where the test list comes from: ``--config`` (+ ``--set``), or ``--root/--list/--mapping/--format``."""

    config_path: str | None
    overrides: tuple[str, ...]
    root: str | None
    list_path: str | None
    mapping: str | None
    fmt: str

    @property
    def csv_classes(self) -> bool:
        """A CSV list without a class table: the checkpoint's classes, in its order."""
        return not self.config_path and self.fmt == "csv" and not self.mapping

    @property
    def clip_items(self) -> list[str]:
        """The ``clip.*`` keys of ``--set`` (the checkpoint's clip settings are used, except these)."""
        return [o for o in self.overrides if o.split("=", 1)[0].strip().startswith("clip.")]


@dataclass(frozen=True)
class EvalOutputs:
    """The files ``evaluate`` writes: ``--json``, the confusion-matrix PNG, ``--predictions``."""

    json: str | None
    plot: str | None
    predictions: str | None

    def check(self, inputs: list) -> None:
        """The output rule (none is an input or another output) and a write probe, before any scoring."""
        from dlkdd.outputs import check_outputs, check_writable_file

        named = {"--json": self.json, "--plot": self.plot, "--predictions": self.predictions}
        check_outputs(named, inputs)
        for opt, path in named.items():
            if path:
                check_writable_file(path, opt)

    def write(self, checkpoint: str, m: dict) -> None:
        from dlkdd.pipeline.evaluate import plot_confusion

        if self.predictions:
            from dlkdd.predictions import Predictions, write_predictions

            rows = m["predictions"]
            p = Predictions([r["key"] for r in rows], [r["label"] for r in rows], [r["probs"] for r in rows],
                            m["classes"], {"views": m["test_views"], "checkpoint": str(checkpoint), "kind": m["kind"],
                                           "seed": m["seed"], "top1": m["top1"]})
            click.echo(f"predictions: {write_predictions(self.predictions, p)}")
        if self.json:
            _write_json(self.json, m)
            click.echo(f"metrics: {self.json}")
        if self.plot:
            click.echo(f"confusion matrix: {plot_confusion(m, self.plot)}")


def _write_json(path: str, m: dict) -> None:
    """Strict JSON (never NaN/Infinity, which other JSON readers refuse)."""
    import json

    from dlkdd.errors import DataError
    from dlkdd.utils import atomic_write_text

    try:
        text = json.dumps(m, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise DataError(f"--json {path}: the metrics hold NaN/inf; not written (the model's outputs are "
                        f"degenerate: retrain or use another checkpoint)") from None
    atomic_write_text(path, text)


def _data_config(src: TestSource):
    """``(DataConfig, the files it reads)`` of the test list."""
    from dlkdd.commands.common import data_inputs

    if src.config_path:
        cfg = load_cli_config(src.config_path, src.overrides)
        return cfg.data, data_inputs(cfg, src.config_path)
    if src.list_path and (src.mapping or src.fmt == "csv"):  # a CSV list names its classes itself
        from dlkdd.config import DataConfig

        d = DataConfig(format=src.fmt, root=src.root or "", test_list=src.list_path, mapping=src.mapping or "")
        return d, [p for p in (src.list_path, src.mapping) if p]
    raise click.UsageError("give --config C, or --root R --list L --mapping M (--mapping is optional with "
                           "--format csv)")


def _test_manifest(checkpoint: str, src: TestSource, data_cfg, views: int, progress: bool):
    """``(manifest of the test clips, clip settings or None)``; every clip is checked first (a corrupt
    clip may decode far enough to be scored silently): data.on_bad_clip=error (default) lists the bad
    ones and stops, skip evaluates without them."""
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.prepare import apply_bad_clip_policy

    items = src.clip_items
    ckpt = _checkpoint_dict(checkpoint) if items or src.csv_classes else {}  # read here only when needed
    clip_cfg = _clip_overrides(ckpt, items)
    if clip_cfg is not None:  # --set clip.* may ask for more than this machine holds
        check_views_memory(clip_cfg, views, "evaluate")
    if src.csv_classes:
        from dlkdd.data.manifest import read_csv

        manifest = read_csv(src.list_path, src.root or "", ckpt.get("classes") or None, check_files=False)
    else:
        manifest = manifest_from_config(data_cfg, "test", check_files=False)
    return apply_bad_clip_policy(manifest, data_cfg.on_bad_clip, progress=progress, decode=True), clip_cfg


def _print_metrics(checkpoint: str, m: dict, clips: int, crops: str) -> None:
    click.echo(f"{checkpoint}: top-1 {fmt_pct(m['top1'])}  top-5 {fmt_pct(m['top5'])}  (n={m['n']}, "
               f"{clips} clip(s) x {crops} crop(s))")
    for c, a in zip(m["classes"], m["per_class"]):
        click.echo(f"  {c:<24} {'n/a' if a is None else f'{a:6.2f}%'}")


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
