"""Copy-pasteable fix hints: the user's own ``--config``/``--set`` options for a suggested command.

An error that suggests a command (e.g. "build the right cache with ``dlkdd cache-logits ...``")
must repeat the settings the user ran with, or the suggested command builds the wrong thing.
:func:`config_args` reads them from the running click command (the ``config_path`` and
``overrides`` parameters of :func:`dlkdd.commands.common.config_options`); outside a dlkdd
command (library use) only the config path is known.

``config_args("c.yaml")`` -> ``"--config c.yaml --set clip.size=24"`` (shell-quoted).
"""
from __future__ import annotations

import shlex

__all__ = ["cli_config_options", "config_args"]


def cli_config_options() -> tuple[str | None, tuple[str, ...]]:
    """``(config_path, overrides)`` of the running dlkdd command; ``(None, ())`` outside one."""
    try:
        import click
    except ImportError:  # pragma: no cover - click is a dependency
        return None, ()
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        params = ctx.params or {}
        if "overrides" in params or "config_path" in params:
            return params.get("config_path"), tuple(params.get("overrides") or ())
        ctx = ctx.parent
    return None, ()


def config_args(config_path: str | None = None) -> str:
    """``--config PATH`` plus one ``--set KEY=VALUE`` per override the user gave, shell-quoted.

    ``config_path`` defaults to the running command's ``--config`` (``<cfg>`` when none).
    """
    cli_path, overrides = cli_config_options()
    path = config_path or cli_path
    parts = ["--config", shlex.quote(str(path)) if path else "<cfg>"]
    for o in overrides:
        parts += ["--set", shlex.quote(str(o))]
    return " ".join(parts)
