"""``dlkdd compare NAME=RUNS ...``: paired statistics between groups of runs on the same test clips."""
from __future__ import annotations

import glob
from pathlib import Path

import click

from dlkdd.commands.common import friendly_errors


def _expand(spec: str) -> tuple[str, list[str]]:
    if "=" not in spec:
        raise click.BadParameter(f"{spec!r}: expected NAME=GLOB (e.g. student='runs/study/student-s*')",
                                 param_hint="GROUPS")
    name, pattern = spec.split("=", 1)
    name = name.strip()
    if not name:
        raise click.BadParameter(f"{spec!r}: empty group name", param_hint="GROUPS")
    paths = sorted({p for part in pattern.split(",") if part for p in (glob.glob(part) or [part])})
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise click.BadParameter(f"{name}: nothing matches {missing[0]!r}", param_hint="GROUPS")
    return name, paths


@click.command("compare")
@click.argument("groups", nargs=-1, required=True, metavar="NAME=GLOB...")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG of models and pairs.")
@click.option("--bootstrap", "reps", type=click.IntRange(100), default=10000, show_default=True,
              help="Paired bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--seeds", "seed_mode", type=click.Choice(["resampled", "pooled"]), default="resampled",
              show_default=True, help="Bootstrap: also resample each model's seeds (two-level), or average "
                                      "each clip's correctness over seeds and resample clips only.")
@click.option("--alpha", type=click.FloatRange(0.0, 0.5, min_open=True), default=0.05, show_default=True)
@click.option("--against", "against", multiple=True, metavar="NAME",
              help="Only the pairs that compare a later group with NAME (repeatable), e.g. every arm against "
                   "the baseline; default: every later group against every earlier one.")
@friendly_errors
def compare(groups, json_out, plot, reps, seed, seed_mode, alpha, against):
    """Compare groups of runs (seeds) scored on the same test clips.

    Each NAME=GLOB names a model and its runs: run directories (their predictions.jsonl),
    prediction files (`evaluate --predictions`) or `evaluate --json` files; comma-separate several
    globs. Later groups are compared with earlier ones ("is B better than A?"). Per model: top-1
    per seed, mean, std and 95% interval over seeds, and whether it beats chance (exact binomial).
    Per pair: the difference with a paired bootstrap interval over clips (and seeds), exact
    McNemar per seed and pooled, clips won/lost, a verdict, and the clips a difference this size
    needs. Refuses runs scored on different clips, classes or test views.
    """
    from dlkdd.compare import bootstrap_warning, compare_groups, format_report, plot_report
    from dlkdd.predictions import load_predictions

    named = [_expand(g) for g in groups]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise click.BadParameter("group names must differ", param_hint="GROUPS")
    unknown = [a for a in against if a not in names]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not one of the groups ({', '.join(names)})", param_hint="--against")
    _check_outputs(named, json_out, plot)
    preds = {n: [load_predictions(p) for p in paths] for n, paths in named}
    _note_repeated_runs(named)
    warn = bootstrap_warning(reps, alpha)
    if warn:
        click.secho(f"warning: {warn}", fg="yellow", err=True)
    report = compare_groups(preds, reps=reps, seed=seed, alpha=alpha, seeds=seed_mode, against=against or None)
    report["inputs"] = {n: paths for n, paths in named}
    click.echo(format_report(report))
    if json_out:
        from dlkdd.utils import atomic_write_json

        atomic_write_json(json_out, report)
        click.echo(f"json: {json_out}")
    if plot:
        click.echo(f"plot: {plot_report(report, plot)}")


def _check_outputs(named: list[tuple[str, list[str]]], json_out: str | None, plot: str | None) -> None:
    """The output rule (no output is an input - a run's predictions.jsonl included - or the other output) and
    a write probe, before any file is read."""
    from dlkdd.outputs import check_outputs, check_writable_file

    inputs = [p for _, paths in named for p in paths]
    inputs += [str(Path(p) / "predictions.jsonl") for p in inputs if Path(p).is_dir()]
    check_outputs({"--json": json_out, "--plot": plot}, inputs)
    if json_out:
        check_writable_file(json_out, "--json")
    if plot:
        check_writable_file(plot, "--plot")


def _note_repeated_runs(named: list[tuple[str, list[str]]]) -> None:
    """Warn when one run (file) is in two groups, or twice in one: the comparison is then of a run with itself."""
    from dlkdd.outputs import same_file

    seen: list[tuple[str, str]] = []
    for name, paths in named:
        for p in paths:
            for other, q in seen:
                if same_file(p, q):
                    click.secho(f"warning: {p} is in group {name} and, as {q}, in group {other}: those runs are "
                                f"one run compared with itself", fg="yellow", err=True)
            seen.append((name, p))
