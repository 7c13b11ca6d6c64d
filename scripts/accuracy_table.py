"""Merge the accuracy study's results.json files (one per run directory) into one Markdown table.

    python scripts/accuracy_table.py runs/accuracy runs/accuracy_s1 [--actlumos runs/actlumos-arid6-mini]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--actlumos", default=None, help="an ActLumos run directory (teacher/, student/) to add, seed 0")
    a = ap.parse_args()
    results: dict = {}
    for d in a.dirs:
        p = Path(d) / "results.json"
        if p.exists():
            results.update(json.loads(p.read_text()))
    if a.actlumos:
        for name, sub in (("actlumos-teacher", "teacher"), ("actlumos-student", "student")):
            m = Path(a.actlumos) / sub / "metrics.json"
            if m.exists():
                mm = json.loads(m.read_text())
                hist = json.loads((Path(a.actlumos) / sub / "log.json").read_text())
                results[f"{name}/0"] = {"name": name, "seed": 0, "top1": mm["top1"], "top5": mm["top5"],
                                        "n": mm["val"]["n"], "train_s": sum(r.get("train_seconds", 0) for r in hist)}
    print(table(results))  # noqa: T201


if __name__ == "__main__":
    main()
