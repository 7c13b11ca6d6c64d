"""Per-clip prediction files: what a model said about every test clip, for paired comparisons.

Written by ``dlkdd evaluate --predictions FILE`` and by every training run (``OUT/predictions.jsonl``
beside ``metrics.json``, the final weights on the test list); read by ``dlkdd compare``
(:mod:`dlkdd.compare`).

Format, chosen by the file's suffix:

* JSON lines (``.jsonl``, default): line 1 a header
  ``{"dlkdd_predictions": 1, "classes": [...], "views": {...}, ...}``, then one object per clip
  ``{"key", "label", "pred", "topk": [class ids], "probs": [C floats]}``.
* CSV (``.csv``): line 1 ``# `` + the same header as JSON, line 2 the columns
  ``key,label,pred,topk,p_<class>...`` (``topk`` ids joined by spaces), then one row per clip.

``probs`` are ``softmax(logits)`` of the clip's (view-averaged) logits. ``views`` records how
the clips were cut for testing (clips x crops, frames, stride, size, resize), so that runs
scored on different test views are never compared.

In memory: :class:`Predictions` with ``keys`` (N,), ``labels`` int64 (N,), ``probs`` float64 (N,C).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlkdd.errors import DataError

__all__ = ["PREDICTIONS_FILE", "Predictions", "from_logits", "write_predictions", "read_predictions",
           "predictions_path", "eval_view_spec", "load_predictions", "check_rows"]

PREDICTIONS_FILE = "predictions.jsonl"  # in a run directory, beside metrics.json
_VERSION = 1


@dataclass
class Predictions:
    """Per-clip class probabilities of one model on one test list."""

    keys: list[str]
    labels: np.ndarray  # int64 (N,)
    probs: np.ndarray  # float64 (N, C), rows sum to 1
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)  # views, checkpoint, kind, ...
    path: str = ""

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.probs = np.asarray(self.probs, dtype=np.float64)
        n = len(self.keys)
        if self.probs.shape != (n, len(self.classes)) or self.labels.shape != (n,):
            raise DataError(f"{self.path or 'predictions'}: {n} keys, labels {self.labels.shape} and probabilities "
                            f"{self.probs.shape} do not fit {len(self.classes)} classes")
        if len(set(self.keys)) != n:
            raise DataError(f"{self.path or 'predictions'}: a clip key is listed twice")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def correct(self) -> np.ndarray:
        """bool (N,): top-1 right."""
        return self.pred == self.labels

    @property
    def top1(self) -> float:
        return 100.0 * float(self.correct.mean()) if len(self) else 0.0

    def aligned(self, keys: Sequence[str]) -> "Predictions":
        """The same predictions in the order of ``keys`` (which must be exactly this file's keys)."""
        index = {k: i for i, k in enumerate(self.keys)}
        idx = [index[k] for k in keys]
        return Predictions(list(keys), self.labels[idx], self.probs[idx], self.classes, self.meta, self.path)


def eval_view_spec(clip_cfg: Any, clips: int = 1, crops: int = 1) -> dict[str, int]:
    """How test clips are cut: ``clips`` x ``crops`` views of ``frames`` every ``stride``, ``size`` crop of ``resize``."""
    return {"clips": int(clips), "crops": int(crops), "frames": int(clip_cfg.frames), "stride": int(clip_cfg.stride),
            "size": int(clip_cfg.size), "resize": int(getattr(clip_cfg, "resize", clip_cfg.size))}


def from_logits(keys: Sequence[str], labels: Sequence[int], logits: Any, classes: Sequence[str],
                meta: dict[str, Any] | None = None) -> Predictions:
    """:class:`Predictions` from raw logits ``(N, C)`` (a tensor or array): ``probs = softmax(logits)``."""
    z = np.asarray(logits.detach().cpu().float().numpy() if hasattr(logits, "detach") else logits, dtype=np.float64)
    z = z.reshape(len(keys), -1)
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    return Predictions(list(keys), np.asarray(labels), p, list(classes), dict(meta or {}))


def _rows(p: Predictions, topk: int) -> list[dict[str, Any]]:
    k = min(topk, len(p.classes))
    order = np.argsort(-p.probs, axis=1, kind="stable")[:, :k]
    return [{"key": key, "label": int(lab), "pred": int(top[0]), "topk": [int(j) for j in top],
             "probs": [float(v) for v in row]}
            for key, lab, top, row in zip(p.keys, p.labels, order, p.probs)]


def write_predictions(path: str | Path, p: Predictions, topk: int = 5) -> Path:
    """Write ``p`` as JSON lines (``.jsonl``/other) or CSV (``.csv``), atomically."""
    from dlkdd.utils import atomic_write_text

    path = Path(path)
    header = {"dlkdd_predictions": _VERSION, "classes": list(p.classes), "n": len(p), **p.meta}
    rows = _rows(p, topk)
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        buf.write("# " + json.dumps(header) + "\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["key", "label", "pred", "topk"] + [f"p_{c}" for c in p.classes])
        for r in rows:
            w.writerow([r["key"], r["label"], r["pred"], " ".join(map(str, r["topk"]))] + r["probs"])
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(o) + "\n" for o in [header] + rows)
    atomic_write_text(path, text)
    return path


def predictions_path(path: str | Path) -> Path:
    """A prediction file itself, or the ``predictions.jsonl`` of a run directory."""
    path = Path(path)
    if path.is_dir():
        f = path / PREDICTIONS_FILE
        if not f.is_file():
            raise DataError(f"run directory {path} has no {PREDICTIONS_FILE} (runs write it at the end of training; "
                            f"for an older run: dlkdd evaluate CKPT --config C --predictions {f})")
        return f
    if not path.is_file():
        raise DataError(f"prediction file not found: {path}")
    return path


def read_predictions(path: str | Path) -> Predictions:
    """Read a prediction file (or a run directory's); :class:`DataError` naming the file and line if malformed."""
    path = predictions_path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: a binary file (a checkpoint?), not a prediction file; give a run directory, its "
                        f"predictions.jsonl, or an `evaluate --predictions/--json` file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    try:
        if path.suffix.lower() == ".csv":
            if not lines or not lines[0].startswith("# "):
                raise ValueError("line 1 must be '# ' + the JSON header")
            header = json.loads(lines[0][2:])
            recs = list(csv.reader(lines[1:]))
            cols = recs[0]
            nc = len(header["classes"])
            if cols[:4] != ["key", "label", "pred", "topk"] or len(cols) != 4 + nc:
                raise ValueError(f"line 2 must be the columns key,label,pred,topk,p_<class> x {nc}")
            rows = [{"key": r[0], "label": int(r[1]), "pred": int(r[2]), "probs": [float(v) for v in r[4:]]}
                    for r in recs[1:] if r]
        else:
            header = json.loads(lines[0]) if lines else {}
            rows = [json.loads(s) for s in lines[1:] if s.strip()]
        if header.get("dlkdd_predictions") != _VERSION:
            raise ValueError("not a dlkdd prediction file (no 'dlkdd_predictions' header)")
        classes = list(header.pop("classes"))
        header.pop("dlkdd_predictions")
        header.pop("n", None)
        keys = [str(r["key"]) for r in rows]
        labels = [int(r["label"]) for r in rows]
        probs = np.array([r["probs"] for r in rows], dtype=np.float64).reshape(len(rows), len(classes))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{path}: malformed prediction file ({e})") from None
    check_rows(path, rows, probs, len(classes), first_line=3 if path.suffix.lower() == ".csv" else 2)
    return Predictions(keys, labels, probs, classes, header, str(path))


def check_rows(path: Any, rows: Sequence[dict[str, Any]], probs: np.ndarray, num_classes: int,
               first_line: int | None = None) -> None:
    """Refuse rows that would be scored wrongly (:class:`DataError` naming the row): probabilities that
    are NaN/inf, outside [0, 1] or do not sum to 1 (argmax(NaN) is 0, which may turn a wrong clip
    right); a label outside the classes; a ``pred`` outside the classes or not the argmax of ``probs``.

    ``first_line``: the file line of row 0 (rows are then named by line), else by index in ``predictions``.
    """
    finite = np.isfinite(probs).all(1)
    sane = finite & (probs >= 0).all(1) & (probs <= 1).all(1) & (np.abs(np.nan_to_num(probs).sum(1) - 1) <= 1e-3)
    for i, r in enumerate(rows):
        where = f"line {first_line + i}" if first_line is not None else f"predictions[{i}]"
        why = None
        if not sane[i]:
            why = "its probabilities are NaN/inf" if not finite[i] else "its probabilities are not a distribution " \
                                                                        "(each in [0, 1], summing to 1)"
        elif not 0 <= int(r["label"]) < num_classes:
            why = f"label {r['label']} is not one of the {num_classes} classes"
        elif r.get("pred") is not None and not 0 <= int(r["pred"]) < num_classes:
            why = f"pred {r['pred']} is not one of the {num_classes} classes"
        elif r.get("pred") is not None and probs[i, int(r["pred"])] < probs[i].max():
            why = f"pred {r['pred']} is not the most probable class ({int(probs[i].argmax())}) of its probabilities"
        if why:
            raise DataError(f"{path}: {where} (clip {r.get('key')!s}): {why}; the file is damaged or was not "
                            f"written by dlkdd: re-run dlkdd evaluate ... --predictions FILE")


def load_predictions(path: str | Path) -> Predictions:
    """A run directory, a prediction file, or an ``evaluate --json`` file (its per-clip ``predictions``)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return read_predictions(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        rows = obj["predictions"]
        probs = np.array([r["probs"] for r in rows], dtype=np.float64).reshape(len(rows), len(obj["classes"]))
        meta = {"views": obj.get("test_views"), "checkpoint": obj.get("checkpoint"), "kind": obj.get("kind"),
                "seed": obj.get("seed")}
        check_rows(path, rows, probs, len(obj["classes"]))
        return Predictions([r["key"] for r in rows], [r["label"] for r in rows], probs, obj["classes"], meta, str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an `evaluate --json` file with per-clip probabilities ({e}); re-run "
                        f"dlkdd evaluate ... --predictions FILE") from None
