"""Lines and parameters of every function of a package (``ast``), longest and widest first.

    python scripts/function_sizes.py [PACKAGE_DIR=dlkdd] [--lines 60] [--params 8] [--exclude bench]

Lines: from the ``def`` line to the function's last line (decorators excluded, docstring included).
Parameters: positional, keyword-only and ``*args``/``**kwargs``, without ``self``/``cls``. Nested
functions count on their own. Prints the functions over either limit and a one-line summary.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path


def sizes(root: Path, exclude: tuple[str, ...] = ()) -> list[tuple[str, int, int]]:
    """``[(module:qualname, lines, params)]`` of every function under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if any(part in exclude for part in rel.parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = child.args
                    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                    params = len([n for n in names if n not in ("self", "cls")])
                    out.append((f"{rel}:{prefix}{child.name}", child.end_lineno - child.lineno + 1, params))
                    stack.append((child, f"{prefix}{child.name}."))
                elif isinstance(child, ast.ClassDef):
                    stack.append((child, f"{prefix}{child.name}."))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default="dlkdd")
    ap.add_argument("--lines", type=int, default=60)
    ap.add_argument("--params", type=int, default=8)
    ap.add_argument("--exclude", action="append", default=[])
    a = ap.parse_args()
    rows = sizes(Path(a.package), tuple(a.exclude))
    long = sorted((r for r in rows if r[1] > a.lines), key=lambda r: -r[1])
    wide = sorted((r for r in rows if r[2] > a.params), key=lambda r: -r[2])
    for title, items in ((f"over {a.lines} lines", long), (f"over {a.params} parameters", wide)):
        print(f"{len(items)} functions {title}:")
        for name, n, p in items:
            print(f"  {n:4d} lines {p:3d} params  {name}")
    top_l = max(rows, key=lambda r: r[1])
    top_p = max(rows, key=lambda r: r[2])
    print(f"{len(rows)} functions; {len(long)} over {a.lines} lines, {len(wide)} over {a.params} parameters; "
          f"longest {top_l[0]} ({top_l[1]}), widest {top_p[0]} ({top_p[2]})")


if __name__ == "__main__":
    main()
