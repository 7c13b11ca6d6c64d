"""Options shared by commands: ``--config``, ``--set key=value`` and the global context."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import click


@dataclass
class Context:
    """Global options of the ``dlkdd`` group (``ctx.obj``)."""

    device: str = "auto"
    seed: int | None = None
    verbose: int = 0


def config_options(required: bool = True) -> Callable:
    """Add ``--config C`` and repeatable ``--set key=value`` to a command."""

    def deco(f: Callable) -> Callable:
        f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override a config value, dotted keys (repeatable), e.g. --set kd.tau=4")(f)
        f = click.option("--config", "config_path", type=click.Path(dir_okay=False), required=required,
                         help="YAML preset, e.g. configs/arid6-mini.yaml")(f)
        return f

    return deco


def load_cli_config(config_path: str | None, overrides: tuple[str, ...] = (), extra: dict[str, Any] | None = None):
    """Load the config, turning a bad value into a clean click error naming the key.

    ``extra``: overrides from dedicated CLI options (e.g. ``--tau``), applied last; None values skipped.
    The global ``--seed`` (if given) overrides ``seed``.
    """
    from dlkdd.config import ConfigError, load_config

    ctx = click.get_current_context(silent=True)
    items = list(overrides)
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    if ctx is not None and isinstance(ctx.obj, Context) and ctx.obj.seed is not None:
        extra.setdefault("seed", ctx.obj.seed)
    try:
        cfg = load_config(config_path, items)
        if extra:
            cfg = cfg.replace(**extra)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--config/--set") from None
    return cfg


def get_device(ctx: click.Context | None = None) -> str:
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is not None and isinstance(ctx.obj, Context):
        return ctx.obj.device
    return "auto"


def friendly_errors(f: Callable) -> Callable:
    """Turn dlkdd's expected errors (bad video, bad cache, bad checkpoint...) into one-line
    ``Error: ...`` messages with exit code 1, instead of tracebacks."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dlkdd.errors import DlkddError

        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt:
            raise click.ClickException(interrupted_message(kwargs)) from None
        except DlkddError as e:
            raise click.ClickException(_worker_message(str(e)) or str(e)) from None
        except RuntimeError as e:
            msg = _worker_message(str(e))
            if msg is None:
                raise
            raise click.ClickException(msg) from None

    return wrapper


def interrupted_message(kwargs: dict[str, Any]) -> str:
    """What a Ctrl-C'd command tells the user: how to continue, where it can."""
    from pathlib import Path

    out = kwargs.get("out")
    if "resume" in kwargs and out:  # a training command: last.pt holds the last completed epoch
        if (Path(out) / "last.pt").exists():
            return (f"interrupted; {Path(out) / 'last.pt'} holds the last completed epoch: run the same command "
                    f"with --resume {out} to continue")
        return f"interrupted before the first epoch finished; nothing to resume in {out}: run the command again"
    if "teacher_path" in kwargs:  # cache-logits: the store's done mask
        return "interrupted; run the same command again to continue from the clips already scored"
    return "interrupted"


def _worker_message(text: str) -> str | None:
    """The dlkdd error inside a DataLoader worker's re-raised exception (or the one line for a worker that
    died), or None.

    A worker's exception reaches the main process as ``Caught VideoError in DataLoader worker
    process 0. Original Traceback (...)`` (a RuntimeError when the class cannot be rebuilt from one
    string): the user needs only its last line, ``dlkdd.errors.VideoError: <file>: <reason>``.
    """
    if "DataLoader worker" in text and "exited unexpectedly" in text:  # killed: SIGBUS on a full /dev/shm, OOM
        from dlkdd.data.workers import SHARE_FIX

        return f"{text.strip().splitlines()[0]} (killed by the system; a full /dev/shm or memory): {SHARE_FIX}"
    if "in DataLoader worker process" not in text:
        return None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("dlkdd.errors.") and ": " in line:
            return line.split(": ", 1)[1]
    return None


def data_inputs(cfg: Any, config_path: str | None = None) -> list[str]:
    """The files a config makes a command read (the config, the lists, the class table): what no
    output may overwrite (:func:`dlkdd.outputs.check_outputs`)."""
    d = cfg.data
    return [p for p in (config_path, d.train_list, d.test_list, d.mapping, getattr(cfg.enhancer, "weights", None)) if p]


#: the files a training run writes in its ``--out`` (besides its final ``<kind>.pt``)
RUN_FILES = ("last.pt", "best.pt", "log.json", "log.csv", "metrics.json", "predictions.jsonl", "curves.png", "run.lock")


def check_run_outputs(out: str, final: str, inputs: list) -> None:
    """The output rule for a training run: ``--out`` is no input, and no file it writes there is one."""
    from pathlib import Path

    from dlkdd.outputs import check_outputs

    check_outputs({"--out": out}, inputs)
    for name in (final, *RUN_FILES):  # best.pt may be a hard link of last.pt: not checked against each other
        check_outputs({f"--out {name}": Path(out) / name}, inputs)


def check_views_memory(clip_cfg: Any, views: int, what: str) -> None:
    """Refuse (ResourceError) clip settings whose ``views`` decoded clips of one video cannot fit in this
    machine's free memory: ``views * 3 * frames * size^2`` float32, twice (decoded frames and the clip)."""
    from dlkdd.errors import ResourceError
    from dlkdd.train.rundir import mem_available_bytes

    need = 2 * int(views) * 3 * int(clip_cfg.frames) * max(int(clip_cfg.size), int(getattr(clip_cfg, "resize", 0))) ** 2 * 4
    have = mem_available_bytes()
    if have is not None and need > have:
        raise ResourceError(f"{what}: clip.frames={clip_cfg.frames}, clip.size={clip_cfg.size} needs about "
                            f"{need / 2**30:.1f} GiB of memory per video (estimate), this machine has "
                            f"{have / 2**30:.1f} GiB available; lower clip.frames or clip.size")


def warn_test_clips_in_train(cfg: Any) -> None:
    """Say so (stderr) when training clips are also test clips: the run would be scored on clips it trained on."""
    from dlkdd.data.check import overlapping_clips
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.errors import DataError

    if not cfg.data.test_list or not is_rank0():
        return
    try:
        shared = overlapping_clips(manifest_from_config(cfg.data, "train", check_files=False),
                                   manifest_from_config(cfg.data, "test", check_files=False))
    except DataError:  # the run itself reports a bad list, with its own message
        return
    if shared:
        click.secho(f"warning: {len(shared)} training clip(s) are also in the test list {cfg.data.test_list} "
                    f"(first: {shared[0]}): the test accuracy will measure memorisation; run `dlkdd data check`",
                    fg="yellow", err=True)


def is_rank0() -> bool:
    """False in the non-zero ranks of a torchrun job (they neither print results nor write files)."""
    import os

    return os.environ.get("RANK", "0") == "0"



def fmt_pct(v) -> str:
    """:func:`dlkdd.utils.fmt_pct` (imported on use: ``dlkdd --help`` stays light)."""
    from dlkdd.utils import fmt_pct as fmt

    return fmt(v)
