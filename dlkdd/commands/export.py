"""``dlkdd export CKPT --format onnx|torchscript --out FILE``: a deployable file of a classifier."""
from __future__ import annotations

import click

from dlkdd.commands.common import friendly_errors


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True,
              help="onnx (ONNX Runtime; needs pip install 'dlkdd[export]') or torchscript (torch.jit).")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Output file, e.g. student.onnx or student.ts; the spec goes beside it as FILE.json.")
@click.option("--int8", type=click.Choice(["dynamic", "static"]), is_flag=False, flag_value="dynamic", default=None,
              help="ONNX only. --int8 / --int8 dynamic: ONNX Runtime dynamic int8 - a 4x smaller file, but slower "
                   "than fp32 on R(2+1)D (BENCHMARKS.md, 'Deployed formats'). --int8 static: calibrated int8 (QDQ) "
                   "of the light trunks (efficientnet_lite0, mobilenet_v2), 1.6-1.8x faster than fp32 on a CPU, "
                   "checked against fp32 on held training clips; other trunks are refused.")
@click.option("--calib-clips", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="--int8 static: centred training clips that calibrate (from the checkpoint's own training list).")
@click.option("--calib-list", type=click.Path(dir_okay=False), default=None,
              help="--int8 static: calibrate on this list (the format of the checkpoint's data.train_list) instead.")
@click.option("--opset", type=click.IntRange(18, 23), default=18, show_default=True,
              help="ONNX opset (18-23: torch's exporter writes 18 and up).")
@click.option("--no-check", is_flag=True, help="Skip running the written file against the checkpoint.")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Largest logit difference accepted by the check (fp32).")
@friendly_errors
def export(checkpoint, fmt, out, int8, calib_clips, calib_list, opset, no_check, tol):
    """Export a student / baseline / teacher checkpoint to ONNX or TorchScript.

    The file takes float clips (B,3,T,H,W) in [0,1] (normalisation and any enhancer inside) and
    returns logits (B,C); class names and the clip spec travel with it. Batch and frames are
    dynamic (BERT head: at most 8 x its position embeddings); run it with `dlkdd predict FILE VIDEO`.
    """
    import math

    from dlkdd.deploy.export import export_checkpoint
    from dlkdd.deploy.spec import sidecar_path
    from dlkdd.outputs import check_outputs, check_writable_file

    if int8 and fmt != "onnx":
        raise click.BadParameter("int8 quantisation is for --format onnx", param_hint="--int8")
    if int8 != "static" and (calib_list is not None or calib_clips != 16):
        raise click.BadParameter("calibration is for --int8 static", param_hint="--calib-clips/--calib-list")
    if not (math.isfinite(tol) and tol > 0):
        raise click.BadParameter(f"must be a number > 0, got {tol}", param_hint="--tol")
    spec_file = sidecar_path(out)
    check_outputs({"--out": out, "--out's spec": spec_file}, [checkpoint])
    check_writable_file(out, "--out")  # before the export and its check, not after
    check_writable_file(spec_file, "--out's spec")
    r = export_checkpoint(checkpoint, out, fmt, opset=opset, int8=int8, check=not no_check, tol=tol,
                          calib_clips=calib_clips, calib_list=calib_list)
    frames = r["dynamic"]["frames"]
    kind = f"{fmt} int8 ({int8})" if int8 else fmt
    click.echo(f"{r['path']}: {kind}, {r['bytes'] / 2**20:.1f} MiB, {r['num_classes']} classes, "
               f"input clip (B,3,T,{r['input']['size']},{r['input']['size']}) in [0,1], "
               f"T {frames['min']}..{frames['max'] if frames['max'] is not None else 'any'} "
               f"(trained at {r['clip']['frames']})")
    if r["check"] is not None:
        click.echo(f"check: max |logit difference| vs the checkpoint {r['check']['max_abs_diff']:.2g}"
                   f"{' (random clip; int8 is not held to --tol)' if int8 else ''}")
    q = r.get("int8")
    if q:
        c, a = q["calibration"], q["check"]
        click.echo(f"int8 static: calibrated on {c['clips']} centred clips of {c['list']}; {len(q['fp32_modules'])} "
                   f"trunk modules ({q['fp32_nodes']} nodes) kept fp32; vs fp32 on {a['n']} held training clips: "
                   f"top-1 agreement {a['top1_agreement']:.0%}, relative logit error {a['rel_logit_error']:.3f} "
                   f"(max |logit difference| {a['max_abs_logit_error']:.3g})")
    click.echo(f"spec: {sidecar_path(r['path'])}")
