"""``dlkdd data check``: decode every clip, list bad ones, print statistics (:mod:`dlkdd.data.check`)."""
from __future__ import annotations

import click

from dlkdd.commands.common import config_options, friendly_errors, load_cli_config
from dlkdd.data.formats import list_formats


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
    if write_stats:  # before decoding every clip
        from dlkdd.commands.common import data_inputs
        from dlkdd.outputs import check_outputs, check_writable_file

        check_outputs({"--write-stats": write_stats}, data_inputs(cfg, config_path))
        if split == "test":
            raise click.BadParameter("the statistics are the training clips': use --split train or all",
                                     param_hint="--write-stats")
        check_writable_file(write_stats, "--write-stats")
    report = check_dataset(cfg, split=split, stats_frames=stats_frames, progress=True)
    for line in report.lines():
        click.echo(line)
    if report.leakage is not None and not report.leakage.ok:
        click.secho(f"LEAKAGE: {len(report.leakage.shared)} recording group(s) in both train and test lists",
                    fg="red", bold=True, err=True)
    if write_stats:
        atomic_write_text(write_stats, report.stats_yaml())
        click.echo(f"wrote {write_stats}")
    if not report.usable:
        raise SystemExit(1)


@data.command("split")
@click.argument("list_path", metavar="LIST", type=click.Path(dir_okay=False, exists=True))
@click.option("--by-group", is_flag=True, help="Keep every recording group whole on one side (required).")
@click.option("--test-fraction", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), required=True,
              help="Share of each class's clips to put in the test list (whole groups, so approximate).")
@click.option("--out-train", required=True, type=click.Path(dir_okay=False), help="Training list to write.")
@click.option("--out-test", required=True, type=click.Path(dir_okay=False), help="Test list to write.")
@click.option("--format", "fmt", type=click.Choice(list_formats()), default="arid", show_default=True)
@click.option("--group-regex", default=None,
              help="Regex whose group 'group' (or first group) is a clip key's recording (default: ARID's "
                   "<Class>_<group>_<n>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Which groups go to test (deterministic).")
@friendly_errors
def split(list_path, by_group, test_fraction, out_train, out_test, fmt, group_regex, seed):
    """Write a stratified group-disjoint train/test split of LIST (no recording on both sides)."""
    from dlkdd.data.groups import (compile_group_regex, default_group_regex, find_shared_groups, group_split,
                                   read_list, write_list)
    from dlkdd.errors import DataError

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
    from dlkdd.outputs import check_outputs, check_writable_file

    check_outputs({"--out-train": out_train, "--out-test": out_test}, [list_path])
    check_writable_file(out_train, "--out-train")
    check_writable_file(out_test, "--out-test")
    rows, header = read_list(list_path, fmt)
    res = group_split([r.key for r in rows], [r.label for r in rows], test_fraction, pattern, seed=seed)
    train = [rows[i] for i in res.train]
    test = [rows[i] for i in res.test]
    leak = find_shared_groups([r.key for r in train], [r.key for r in test], pattern)
    if not leak.ok:  # cannot happen (whole groups go to one side); never write a leaking split if it does
        raise DataError(f"{list_path}: the split put recording group(s) {', '.join(sorted(map(str, leak.shared))[:5])} "
                        f"on both sides; nothing written (please report this)")
    if not test or not train:
        raise DataError(f"{list_path}: the split leaves {'no test' if not test else 'no training'} clips "
                        f"of {len(rows)}; nothing written: "
                        f"change --test-fraction, or the list has too few recording groups to split")
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
