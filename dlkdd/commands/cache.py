"""``dlkdd cache ls | info | verify | stats | bench``: inspect logit stores (:mod:`dlkdd.cache.inspect`),
and measure their speed at scale (:mod:`dlkdd.bench.store`)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from dlkdd.commands.common import config_options, friendly_errors, load_cli_config


@click.group()
def cache():
    """Inspect logit stores: ls, info, verify, stats; bench measures a store's speed."""


@cache.command("ls")
@click.argument("directory", default="cache", type=click.Path(file_okay=False))
@click.option("--verify", is_flag=True, help="Read every chunk of every store (slow): 'complete' then means "
              "it passes `cache verify`.")
@friendly_errors
def cache_ls(directory, verify):
    """One line per store under DIRECTORY (default: cache/). Without --verify, 'complete' means the
    writer finished (flag set, every clip done), not that every chunk is still readable."""
    from dlkdd.cache.inspect import list_stores

    rows = list_stores(directory, verify=verify)
    if not rows:
        click.echo(f"no logit stores under {directory}")
        return
    click.echo(f"{'store':<44} {'teacher':<13} {'kind':<9} {'manifest':<13} {'clips':>6} {'views':>5} "
               f"{'classes':>7} {'size':>9}  complete")
    for r in rows:
        if "error" in r:
            click.echo(f"{Path(r['path']).name:<44} unreadable: {r['error']}")
            continue
        if r["complete"]:
            state = "yes"
        elif r.get("problems") and r.get("done", 0) == r.get("clips", 0):
            state = f"NO (damaged: {len(r['problems'])} problem(s), see cache verify)"
        else:
            state = f"NO ({r.get('done', 0)}/{r.get('clips', 0)} done)"
        click.echo(f"{Path(r['path']).name:<44} {str(r.get('teacher')):<13} {str(r.get('teacher_kind')):<9} "
                   f"{str(r.get('manifest')):<13} {r.get('clips', 0):>6} {r.get('views', 0):>5} "
                   f"{r.get('classes', 0):>7} {_size(r.get('size_bytes', 0)):>9}  {state}")
    if verify:
        click.echo("complete = every chunk read and checked (cache verify passes)")
        bad = [Path(r["path"]).name for r in rows if "error" in r or not r["complete"]]
        if bad:
            click.echo(f"{len(bad)} store(s) do not pass `cache verify`: {', '.join(bad)}", err=True)
            sys.exit(1)
    else:
        click.echo("complete = the writer finished; chunks not read (not verified): `dlkdd cache ls --verify` "
                   "or `dlkdd cache verify PATH` reads every chunk")


@cache.command("info")
@click.argument("path", type=click.Path())
@friendly_errors
def cache_info(path):
    """All metadata of one store, as JSON."""
    from dlkdd.cache.inspect import store_info

    info = store_info(path)
    click.echo(json.dumps(info, indent=2, default=str))


@cache.command("verify")
@click.argument("path", type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Also check the keys against this config's training list.")
@friendly_errors
def cache_verify(path, config_path):
    """Exit 0 only if the store is complete, every key present, every logit finite, metadata consistent
    (with itself and the teacher it names; with --config, also everything `student` checks)."""
    from dlkdd.cache.inspect import verify_store

    manifest = None
    if config_path:
        from dlkdd.data.manifest import manifest_from_config

        cfg = load_cli_config(config_path)
        manifest = manifest_from_config(cfg.data, "train")
    problems = verify_store(path, manifest, cfg if config_path else None)
    if problems:
        for p in problems:
            click.echo(f"FAIL {path}: {p}", err=True)
        sys.exit(1)
    click.echo(f"OK {path}")


@cache.command("stats")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path())
@config_options()
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Which list of the config gives the clips' labels.")
@click.option("--tau", "taus", type=float, multiple=True, help="Temperatures to report (default: 1 and kd.tau).")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@click.option("--cache-weight", "weights", type=float, multiple=True,
              help="With several caches: one weight per cache for the ensemble (default: equal).")
@friendly_errors
def cache_stats(paths, config_path, overrides, split, taus, as_json, weights):
    """How informative the soft targets are: the teacher's accuracy on the stored views, and the
    top / true-class probability and entropy of softmax(z/tau) at each temperature. Several
    caches: each one, then their ensemble (the mean of the teachers' softmax(z/tau))."""
    from dlkdd.cache.inspect import soft_target_stats
    from dlkdd.data.manifest import manifest_from_config

    cfg = load_cli_config(config_path, overrides)
    for t in taus:
        if not (math.isfinite(t) and t > 0):
            raise click.BadParameter(f"temperatures must be finite and > 0, got {t}", param_hint="--tau")
    taus = taus or tuple(sorted({1.0, float(cfg.kd.tau)}))
    if len(paths) > 1 or weights:  # several cached teachers: each, then their ensemble soft target
        from dlkdd.cache.ensemble import ensemble_stats, format_ensemble_stats

        try:
            st = ensemble_stats(paths, manifest_from_config(cfg.data, split, check_files=False), taus,
                                list(weights) or None)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--cache-weight") from None
        click.echo(json.dumps(st, indent=2) if as_json else "\n".join(format_ensemble_stats(st, split)))
        return
    path = paths[0]
    st = soft_target_stats(path, manifest_from_config(cfg.data, split, check_files=False), taus)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{st['path']}: {st['clips']} clips x {st['views']} views, {st['classes']} classes ({split} labels)")
    click.echo(f"teacher top-1 on the stored views: {st['view_top1']:.1f}%  (views averaged per clip: "
               f"{st['clip_top1']:.1f}%)")
    click.echo(f"{'tau':>6} {'top prob':>9} {'true-class prob':>16} {'entropy / log C':>16}")
    for r in st["taus"]:
        click.echo(f"{r['tau']:>6g} {r['top_prob']:>9.3f} {r['true_prob']:>16.3f} {r['entropy_ratio']:>16.3f}")


@cache.command("bench")
@click.option("--clips", type=click.IntRange(min=1), required=True, help="Clips (rows) N.")
@click.option("--views", type=click.IntRange(min=1), default=10, show_default=True, help="Stored views per clip V.")
@click.option("--classes", type=click.IntRange(min=1), default=400, show_default=True, help="Classes C.")
@click.option("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default="zarr", show_default=True)
@click.option("--out", "out", type=click.Path(), required=True, help="The store to write (kept afterwards).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the numbers here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ranks", type=click.IntRange(min=1), default=1, show_default=True,
              help="Write with this many processes at once, each its share of whole shards (Zarr only).")
@click.option("--loader", is_flag=True, help="Also read random clips through the student's DataLoader path "
              "(StoredView + StoreRows, 0 and 2 workers, no video).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at --out.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def cache_bench(clips, views, classes, fmt, out, json_out, seed, ranks, loader, overwrite, no_progress):
    """Write a synthetic store of N clips x V views x C classes (float16) with the code precompute
    uses, then read it back: random single clips and random batches of 64. Prints and writes (--json)
    write_clips_per_s, read_clips_per_s and read_batch_clips_per_s; keeps --out to count files and bytes."""
    from dlkdd.bench.store import bench_store
    from dlkdd.cache.backends import remove_store
    from dlkdd.errors import OutputError
    from dlkdd.outputs import check_not_input, check_writable_file

    out_p = Path(out)
    if ranks > 1 and fmt != "zarr":
        raise click.BadParameter("an HDF5 store has one writer; use --format zarr", param_hint="--ranks")
    if json_out:
        jp = Path(json_out)
        check_not_input(jp, [out_p], "--json")
        if out_p.absolute() in jp.absolute().parents:
            raise OutputError(f"--json {jp.absolute()} lies inside --out {out_p.absolute()}: choose another path")
        check_writable_file(jp, "--json")
    if out_p.exists() or out_p.is_symlink():
        if not overwrite:
            raise OutputError(f"--out {out_p.absolute()} already exists; pass --overwrite or choose another path")
        remove_store(out_p)  # refuses anything that is not a logit store
    res = bench_store(out_p, clips, views, classes, fmt, seed=seed, progress=not no_progress, ranks=ranks,
                      loader=loader)
    for k in ("write_clips_per_s", "read_clips_per_s", "read_batch_clips_per_s", "loader_clips_per_s_w0",
              "loader_wait_ms_per_batch_w0", "loader_clips_per_s_w2", "loader_wait_ms_per_batch_w2"):
        if k not in res:
            continue
        click.echo(f"{k}: {res[k]:.1f}")
    click.echo(f"files: {res['files']}  on disk: {_size(res['bytes'])} ({res['disk_over_logical']:.2f}x the "
               f"{_size(res['logical_bytes'])} of data)  store kept at {out_p}")
    if json_out:
        Path(json_out).write_text(json.dumps(res, indent=2) + "\n")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
