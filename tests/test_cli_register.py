"""A command whose module cannot be imported is named with the reason, never "No such command"."""
from __future__ import annotations

import click
from click.testing import CliRunner

from dlkdd.cli import _COMMANDS, _register


def test_a_missing_command_module_is_named():
    group = click.Group("dlkdd")
    _register(group, [("dlkdd.commands.synth", "synth"), ("dlkdd.commands.no_such_step", "no_such_step")])
    r = CliRunner().invoke(group, ["no-such-step", "--out", "x"])
    assert r.exit_code == 1
    assert "No such command" not in r.output
    assert "dlkdd.commands.no_such_step" in r.output and "ModuleNotFoundError" in r.output
    assert "synth" in CliRunner().invoke(group, ["--help"]).output


def test_every_listed_command_loads():
    group = click.Group("dlkdd")
    _register(group, _COMMANDS)
    for name, cmd in group.commands.items():
        assert "unavailable" not in (cmd.help or ""), name
