"""Experiment drivers behind BENCHMARKS.md: not part of the dlkdd package (not installed), run from a
checkout with ``python -m experiments NAME [ARGS...]`` (``python -m experiments`` lists them).

Each experiment is a module here with a ``main(argv)``; :data:`EXPERIMENTS` is the table the driver
(:mod:`experiments.__main__`) asks. Every run is a ``dlkdd`` command (or reads their outputs), so an
experiment reproduces with the installed CLI alone.
"""
from __future__ import annotations

# name -> (module, one line)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "study": ("experiments.study", "the resumable evidence study on arid6's group-disjoint split (arms x seeds)"),
    "students": ("experiments.students", "video and lightweight students of the pose and RGB teachers (issues 22, 24)"),
    "accuracy": ("experiments.accuracy", "backbone only / teacher / student on arid6, several seeds"),
    "accuracy_table": ("experiments.accuracy_table", "the accuracy table of several accuracy runs"),
    "precision_report": ("experiments.precision_report", "fp32 vs bf16 on the same seeds: curves, accuracy, agreement"),
}
