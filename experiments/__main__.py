"""``python -m experiments NAME [ARGS...]``: run experiment NAME (see :data:`experiments.EXPERIMENTS`)
with ARGS; without NAME (or with ``-h``), list the experiments."""
from __future__ import annotations

import importlib
import sys

from experiments import EXPERIMENTS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: python -m experiments NAME [ARGS...]   (python -m experiments NAME -h: its options)\n")
        for name, (_, what) in EXPERIMENTS.items():
            print(f"  {name:18s} {what}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    importlib.import_module(EXPERIMENTS[name][0]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
