"""The ``dlkdd`` command: a click group with global options, one command per pipeline step.

    dlkdd synth | data check | enhancer | enhance | teacher | cache-logits | cache ls/info/verify/stats
          | pose | student | pretrain | evaluate | predict | export | bench | compare

one module per verb in dlkdd/commands/, each calling a stage of dlkdd/pipeline/.

Heavy imports live inside the commands (``dlkdd --help`` is instant).
"""
from __future__ import annotations

import importlib

import click

from dlkdd import __version__
from dlkdd.commands.common import Context

# (module, attribute) of every command; a module is imported when the group is built, which is
# cheap because command modules import torch & co. only inside their functions.
_COMMANDS = [
    ("dlkdd.commands.synth", "synth"),
    ("dlkdd.commands.data", "data"),
    ("dlkdd.commands.enhancer", "enhancer"),
    ("dlkdd.commands.enhance", "enhance"),
    ("dlkdd.commands.teacher", "teacher"),
    ("dlkdd.commands.cache_logits", "cache_logits"),
    ("dlkdd.commands.cache", "cache"),
    ("dlkdd.commands.student", "student"),
    ("dlkdd.commands.pretrain", "pretrain"),
    ("dlkdd.commands.evaluate", "evaluate"),
    ("dlkdd.commands.predict", "predict"),
    ("dlkdd.commands.export", "export"),
    ("dlkdd.commands.bench", "bench"),
    ("dlkdd.commands.compare", "compare"),
    ("dlkdd.commands.pose", "pose"),  # issue 22: the pose stage (pose environment)
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlkdd")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... (auto: CUDA if available)")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("-v", "--verbose", count=True, help="More logging.")
@click.pass_context
def main(ctx: click.Context, device: str, seed: int | None, verbose: int) -> None:
    """dlkdd - dual-light knowledge distillation for action recognition in dark video."""
    from dlkdd.utils import setup_logging

    setup_logging(verbose)
    ctx.obj = Context(device=device, seed=seed, verbose=verbose)


def _register(group: click.Group, commands: list[tuple[str, str]]) -> None:
    """Add each ``(module, attribute)`` command to ``group``. A module that fails to import (a broken or
    partial install) still gets its command name, which then says what is missing - never a bare
    "No such command"."""
    for mod_name, attr in commands:
        try:
            cmd = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            cmd = _broken_command(attr.replace("_", "-"), mod_name, e)
        group.add_command(cmd)


def _broken_command(name: str, mod_name: str, error: Exception) -> click.Command:
    """A stand-in for a command whose module cannot be loaded: any use is one error line naming why."""
    why = f"{type(error).__name__}: {error}"

    def fail(**_: object) -> None:
        raise click.ClickException(f"the `{name}` command cannot be loaded ({mod_name}: {why}); reinstall dlkdd "
                                   f"(pip install -e .) or install what it needs")

    return click.Command(name, callback=fail, help=f"(unavailable: {why})", context_settings={
        "ignore_unknown_options": True, "allow_extra_args": True})


_register(main, _COMMANDS)
