"""The command itself, as a user starts it: ``python -m dlkdd`` and the ``dlkdd`` console script.

The reliability tests fork their commands from a server that imported torch already
(``tests/faults.py``); these start real interpreters, so the entry points, the exit codes of a fresh
process and the promise that ``--help`` imports no torch are checked where they matter.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dlkdd.cli import _COMMANDS
from faults import REPO, env


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)


def test_python_m_dlkdd_help_lists_every_command_without_importing_torch():
    code = ("import sys, runpy\nsys.argv = ['dlkdd', '--help']\n"
            "try:\n    runpy.run_module('dlkdd', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'av', 'zarr', 'h5py', 'matplotlib') if m in sys.modules)\n"
            "print('RC', rc, 'HEAVY', ','.join(heavy) or '-')\n")
    r = _run(sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "RC 0 HEAVY -", r.stdout[-800:]
    for _, attr in _COMMANDS:
        assert f"  {attr.replace('_', '-')} " in r.stdout, (attr, r.stdout)


def test_python_m_dlkdd_bad_input_is_one_error_line_and_rc_2(tmp_path):
    missing = tmp_path / "nope.yaml"
    r = _run(sys.executable, "-m", "dlkdd", "student", "--no-kd", "--config", str(missing), "--out", str(tmp_path / "o"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and str(missing) in r.stderr and "Error" in r.stderr, r.stderr


def test_console_script_reports_the_version():
    from dlkdd import __version__

    script = Path(sys.executable).with_name("dlkdd")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (dlkdd not pip-installed here)")
    r = _run(str(script), "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"dlkdd, version {__version__}", r
