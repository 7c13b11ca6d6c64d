"""``dlkdd synth OUT_DIR`` and ``dlkdd data check --config C``."""
from __future__ import annotations

import click

from dlkdd.commands.common import config_options, friendly_errors, load_cli_config


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(1, 8), default=4, show_default=True, help="Number of action classes.")
@click.option("--clips-per-class", type=click.IntRange(1), default=6, show_default=True)
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

    try:
        paths = make_synthetic(out_dir, classes=classes, clips_per_class=clips_per_class, frames=frames,
                               size=(height, width), seed=seed)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"wrote {classes} classes x {clips_per_class} clips to {paths['root']}")
    for k in ("train_list", "test_list", "mapping", "config"):
        click.echo(f"  {k}: {paths[k]}")


@click.group("data")
def data() -> None:
    """Dataset tools."""


@data.command("check")
@config_options()
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="all", show_default=True)
@click.option("--write-stats", type=click.Path(dir_okay=False), default=None,
              help="Write the training clips' mean/std as a YAML config snippet (model.normalize: dataset).")
@click.option("--stats-frames", type=click.IntRange(1), default=8, show_default=True,
              help="Frames per training clip sampled for the statistics.")
@friendly_errors
def check(config_path: str, overrides: tuple[str, ...], split: str, write_stats: str | None, stats_frames: int) -> None:
    """Decode every clip; list bad ones with the reason; counts and statistics. Exit 1 if any is bad."""
    from dlkdd.data.check import check_dataset
    from dlkdd.utils import atomic_write_text

    cfg = load_cli_config(config_path, overrides)
    report = check_dataset(cfg, split=split, stats_frames=stats_frames, progress=True)
    for line in report.lines():
        click.echo(line)
    if report.leakage is not None and not report.leakage.ok:
        click.secho(f"LEAKAGE: {len(report.leakage.shared)} recording group(s) in both train and test lists",
                    fg="red", bold=True, err=True)
    if write_stats:
        atomic_write_text(write_stats, report.stats_yaml())
        click.echo(f"wrote {write_stats}")
    if not report.ok:
        raise SystemExit(1)


@data.command("split")
@click.argument("list_path", metavar="LIST", type=click.Path(dir_okay=False, exists=True))
@click.option("--by-group", is_flag=True, help="Keep every recording group whole on one side (required).")
@click.option("--test-fraction", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), required=True,
              help="Share of each class's clips to put in the test list (whole groups, so approximate).")
@click.option("--out-train", required=True, type=click.Path(dir_okay=False), help="Training list to write.")
@click.option("--out-test", required=True, type=click.Path(dir_okay=False), help="Test list to write.")
@click.option("--format", "fmt", type=click.Choice(["arid", "dark48", "csv"]), default="arid", show_default=True)
@click.option("--group-regex", default=None,
              help="Regex whose group 'group' (or first group) is a clip key's recording (default: ARID's "
                   "<Class>_<group>_<n>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Which groups go to test (deterministic).")
@friendly_errors
def split(list_path, by_group, test_fraction, out_train, out_test, fmt, group_regex, seed):
    """Write a stratified group-disjoint train/test split of LIST (no recording on both sides)."""
    from dlkdd.data.groups import (compile_group_regex, default_group_regex, find_shared_groups, group_split,
                                   read_list, write_list)

    if not by_group:
        raise click.UsageError("give --by-group: a split of clips at random puts cuts of one recording on both "
                               "sides, and test accuracy then measures recognising seen scenes")
    regex = group_regex or default_group_regex(fmt)
    if not regex:
        raise click.BadParameter(f"{fmt} names carry no recording group; give --group-regex", param_hint="--group-regex")
    try:
        pattern = compile_group_regex(regex)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--group-regex") from None
    rows, header = read_list(list_path, fmt)
    res = group_split([r.key for r in rows], [r.label for r in rows], test_fraction, pattern, seed=seed)
    train = [rows[i] for i in res.train]
    test = [rows[i] for i in res.test]
    leak = find_shared_groups([r.key for r in train], [r.key for r in test], pattern)
    assert leak.ok, leak.shared  # by construction
    write_list(out_train, train, fmt, header)
    write_list(out_test, test, fmt, header)
    click.echo(f"{len(rows)} clips -> {len(train)} train ({out_train}), {len(test)} test ({out_test}); seed {seed}")
    for c in sorted(res.test_groups, key=str):
        n_tr = sum(1 for r in train if r.label == c)
        n_te = sum(1 for r in test if r.label == c)
        click.echo(f"  label {c}: {n_tr} train / {n_te} test clips; test groups: "
                   f"{', '.join(res.test_groups[c]) or '-'}")
    for w in res.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    click.echo(leak.lines()[0])
