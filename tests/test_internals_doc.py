"""docs/INTERNALS.md quotes the signatures of the functions and classes it maps; this checks every quoted
``name(args)`` in backticks against ``inspect.signature`` of the code it names, so a quote that drifts
from the code fails here.

A quote matches a signature when its parameter names appear in the signature in the same order, every
required parameter of the signature is quoted (unless the quote says ``...``), and every ``name=literal``
default it quotes equals the signature's default. A quote is resolved to code by its dotted name, in the
module of its bullet (``- `fit.py`: ...``) of its section (``## Training - `dlkdd/train/` ``) first, then in
the section's package, then anywhere in ``dlkdd`` (any one match suffices where a name is ambiguous).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import dlkdd

DOC = Path(__file__).resolve().parents[1] / "docs" / "INTERNALS.md"

# quoted calls that are usage examples on objects, not signatures of named code
NOT_SIGNATURES = {
    "logging.getLogger", "min", "max", "torch.load", "torch.onnx.export", "MLP", "cfg.replace", "policy.pick", "rows.read", "objective", "enhancer", "enhancer.enhance", "view_rng", "key_rng",
    "fn", "name", "spec.build", "trunk.features", "spec.load_pretrained", "model", "net", "fam.dataset", "store.read",
}


def _index() -> dict[str, list[object]]:
    """Qualified name (``dlkdd.train.fit.fit``, ``dlkdd.cache.store.LogitStore.create``) -> object."""
    out: dict[str, list[object]] = {}
    for m in pkgutil.walk_packages(dlkdd.__path__, "dlkdd."):
        if m.name.startswith("dlkdd.bench.memprobe") or m.name.endswith("__main__"):
            continue
        mod = importlib.import_module(m.name)
        for name, obj in vars(mod).items():
            if getattr(obj, "__module__", None) != mod.__name__ or not callable(obj) or name.startswith("__"):
                continue
            out.setdefault(f"{mod.__name__}.{name}", []).append(obj)
            if inspect.isclass(obj):
                for meth, fn in vars(obj).items():
                    fn = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
                    if inspect.isfunction(fn) and not meth.startswith("__"):
                        out.setdefault(f"{mod.__name__}.{name}.{meth}", []).append(fn)
    for helper in ("faults", "stop_at", "conftest"):  # the tests' helpers the doc maps
        mod = importlib.import_module(helper)
        for name, obj in vars(mod).items():
            if getattr(obj, "__module__", None) == helper and callable(obj):
                out.setdefault(f"tests.{helper}.{name}", []).append(obj)
    return out


def _split_args(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _quotes() -> list[tuple[str, str, str, str]]:
    """``(name, args, scope, where)`` of every backticked ``name(args)`` in the doc (a quote may span lines)."""
    text = DOC.read_text(encoding="utf-8")
    # fenced blocks (the stage map) hold no quotes: blank them, keeping the line numbers
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    marks = []  # (offset, kind, value): section packages and bullet modules, in order
    for m in re.finditer(r"^## .*$", text, re.M):
        pkg = re.search(r"`dlkdd/([\w/]+?)/?`", m.group(0))
        marks.append((m.start(), "section", pkg.group(1).replace("/", ".") if pkg else ""))
    for m in re.finditer(r"^- `(?:dlkdd/)?([\w/]+)\.py`", text, re.M):
        marks.append((m.start(), "bullet", m.group(1).replace("/", ".")))
    marks.sort()
    out = []
    for m in re.finditer(r"`([^`]+)`", text):
        code = " ".join(m.group(1).split())
        head = re.match(r"^([A-Za-z_][\w.]*)\(", code)
        if head is None:
            continue
        depth, end = 0, None
        for i, ch in enumerate(code[len(head.group(1)):]):
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth == 0:
                end = len(head.group(1)) + i
                break
        if end is None:
            continue
        section = bullet = ""
        for off, kind, value in marks:
            if off > m.start():
                break
            if kind == "section":
                section, bullet = value, ""
            else:
                bullet = value
        scope = ".".join(p for p in ("dlkdd", section, bullet) if p)
        where = f"INTERNALS.md:{text.count(chr(10), 0, m.start()) + 1}"
        out.append((head.group(1), code[len(head.group(1)) + 1:end], scope, where))
    return out


def _resolve(name: str, scope: str, index: dict[str, list[object]]) -> list[object]:
    section = ".".join(scope.split(".")[:2])
    for prefix in (scope, section, "dlkdd", "tests"):
        hits = [o for q, objs in index.items() for o in objs
                if (q == name or q.endswith("." + name)) and q.startswith(prefix + ".")]
        if hits:
            return hits
    return []


def _mismatch(args: str, obj: object) -> str:
    """Why the quoted ``args`` do not fit ``obj``'s signature ("" when they do)."""
    try:
        sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except (TypeError, ValueError):
        return ""
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    names = [p.name for p in params]
    quoted = _split_args(args)
    ellipsis = any(q.strip() in ("...", "…") for q in quoted) or any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
    pos = -1
    for q in quoted:
        if q in ("*", "...", "…", "/"):
            continue
        m = re.match(r"\*{0,2}([A-Za-z_]\w*)", q)
        if m is None:
            continue
        if m.group(1) not in names:
            if q.startswith("**") and any(p.kind == p.VAR_KEYWORD for p in params):
                continue
            return f"quotes a parameter {m.group(1)!r} the code does not have (it has {names})"
        i = names.index(m.group(1))
        if i < pos:
            return f"quotes {m.group(1)!r} out of the code's order {names}"
        pos = i
        d = re.match(r"\*{0,2}[A-Za-z_]\w*\s*=\s*(.+)$", q)
        if d:
            try:
                want = ast.literal_eval(d.group(1).strip())
            except (ValueError, SyntaxError):
                continue
            have = params[i].default
            if inspect.isclass(obj) and dataclasses.is_dataclass(obj):  # a field(default_factory=...)
                f = {f.name: f for f in dataclasses.fields(obj)}.get(m.group(1))
                if f is not None and f.default_factory is not dataclasses.MISSING:
                    have = f.default_factory()
            if have is inspect.Parameter.empty or have != want:
                return f"quotes {m.group(1)}={want!r}, the code's default is {have!r}"
    if not ellipsis:
        quoted_names = {re.match(r"\*{0,2}(\w+)", q).group(1) for q in quoted if re.match(r"\*{0,2}\w", q)}
        missing = [p.name for p in params if p.default is inspect.Parameter.empty
                   and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in quoted_names]
        if missing:
            return f"leaves out required parameter(s) {missing} of {names}"
    return ""


QUOTES = _quotes()


def test_the_doc_quotes_signatures():
    assert len(QUOTES) > 100  # the parser still finds the doc's quotes


@pytest.fixture(scope="module")
def index():
    return _index()


def test_every_quoted_signature_matches_the_code(index):
    problems = []
    for name, args, scope, where in QUOTES:
        if name in NOT_SIGNATURES:
            continue
        objs = _resolve(name, scope, index)
        if not objs:
            problems.append(f"{where}: `{name}(...)` names nothing in dlkdd")
            continue
        why = [_mismatch(args, o) for o in objs]
        if all(why):
            problems.append(f"{where}: `{name}({args})` {why[0]}")
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_a_drifted_quote(index):
    """The checker itself: a renamed, reordered, missing or re-defaulted parameter is caught."""
    from dlkdd.train.engine import steps_per_epoch

    assert _mismatch("num_batches, accum_steps=1, max_steps=0", steps_per_epoch) == ""
    assert "does not have" in _mismatch("n_batches, accum_steps, max_steps", steps_per_epoch)
    assert "order" in _mismatch("accum_steps, num_batches", steps_per_epoch)
    assert "required" in _mismatch("accum_steps", steps_per_epoch)
    assert "default" in _mismatch("num_batches, accum_steps=2", steps_per_epoch)
    assert _resolve("fit", "dlkdd.train.fit", index)
