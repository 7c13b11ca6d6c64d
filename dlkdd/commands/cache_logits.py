"""``dlkdd cache-logits``: run the teacher once over the training set; calls
:func:`dlkdd.pipeline.cache_logits.precompute_logits`."""
from __future__ import annotations

from pathlib import Path

import click

from dlkdd.commands.common import (check_views_memory, config_options, friendly_errors, get_device, is_rank0,
                                   load_cli_config)


@click.command("cache-logits")
@config_options()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher checkpoint (teacher.pt from `dlkdd teacher`).")
@click.option("--views", type=int, default=None, help="K stored views per clip (cache.views, default 8).")
@click.option("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default=None, help="Store format.")
@click.option("--out", type=click.Path(), default=None, help="Store path (default: derived under cache.dir).")
@click.option("--features", is_flag=True, default=None, help="Also store the teacher's CLS features.")
@click.option("--overwrite", is_flag=True, help="Rebuild the store even if it exists.")
@click.option("--path-file", type=click.Path(dir_okay=False), default=None,
              help="Write the store's path into this text file (used by `make student`).")
@click.option("--views-from", type=click.Path(), default=None,
              help="Score exactly the views another store holds (same clips and clip spec), so both stores can "
                   "teach one student (`student --cache A --cache B`); its K replaces --views.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def cache_logits(config_path, overrides, teacher_path, views, fmt, out, features, overwrite, path_file, views_from,
                 no_progress):
    """Run the teacher once over every training clip (K views each) into a logit store."""
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.utils import atomic_write_text

    if views is not None and views < 1:
        raise click.BadParameter(f"must be >= 1, got {views}", param_hint="--views")
    cfg = load_cli_config(config_path, overrides, {"cache.views": views, "cache.features": features})
    from dlkdd.commands.common import data_inputs
    from dlkdd.outputs import check_outputs, check_writable_file

    check_outputs({"--path-file": path_file, "--out": out},
                  [teacher_path, *data_inputs(cfg, config_path), *([views_from] if views_from else [])])
    check_views_memory(cfg.clip, cfg.cache.views, f"cache-logits with cache.views={cfg.cache.views}")
    if path_file:  # every output location is checked before the teacher runs
        check_writable_file(path_file, "--path-file")
    if out and not Path(out).exists():  # a new store: refused before any work
        check_writable_file(out, "--out")
    # an existing --out, or a store under cache.dir: a complete one is reused read-only, anything else
    # needs its folder writable (precompute_logits checks that once it knows the store's path)
    path = precompute_logits(cfg, teacher_path, out=out, fmt=fmt, device=get_device(), progress=not no_progress,
                             overwrite=overwrite, views_from=views_from)
    if not is_rank0():
        return
    if path_file:
        atomic_write_text(path_file, f"{path}\n")
    click.echo(str(path))
