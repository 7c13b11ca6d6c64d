"""Inspecting logit stores: list a cache directory, describe one store, verify one store, and
measure how informative its soft targets are.

The logic behind ``dlkdd cache ls [DIR] | info PATH | verify PATH | stats PATH``. Nothing here raises for a
broken store: ``list_stores`` reports it with an ``error`` field, ``verify_store`` returns
the problems as a list of one-line messages (empty list = the store is sound).

A store counts as *complete* only when its ``complete`` flag is set **and** every ``done``
entry is true, so a store whose writer died is never shown as complete.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlkdd.cache.backends import STORE_SUFFIXES
from dlkdd.cache.store import SCHEMA_VERSION, LogitStore
from dlkdd.errors import CacheError

__all__ = ["STORE_SUFFIXES", "disk_usage", "list_stores", "store_info", "verify_store"]

_SHOW = 5  # how many offending keys a message names


def disk_usage(path: str | os.PathLike) -> tuple[int, int]:
    """(bytes allocated on disk, apparent bytes) of a file or a directory tree."""
    p = Path(path)
    files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else []
    disk = apparent = 0
    for q in files:
        try:
            st = q.stat()
        except OSError:
            continue
        apparent += st.st_size
        disk += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return disk, apparent


def _short(sha: Any) -> str:
    return str(sha)[:12] if sha else "-"


def _names(keys: list[str], rows: np.ndarray) -> str:
    shown = ", ".join(repr(keys[int(r)]) for r in rows[:_SHOW])
    return shown + (f" ... (+{rows.size - _SHOW} more)" if rows.size > _SHOW else "")


def list_stores(cache_dir: str | os.PathLike, verify: bool = False) -> list[dict[str, Any]]:
    """One summary dict per store directly under ``cache_dir`` (sorted by name; [] if none).

    Keys: ``path``, ``fmt``, ``teacher`` (short sha), ``teacher_kind``, ``manifest`` (short sha),
    ``clips``, ``views``, ``classes``, ``done``, ``dtype``, ``size_bytes`` (on disk),
    ``complete``, ``verified`` (``verify=True``: :func:`verify_store` ran; ``complete`` then also
    requires it to pass, and ``problems`` lists what it found); a store that cannot be opened has
    ``error`` and ``complete=False``. A missing ``cache_dir`` is a :class:`CacheError`.
    """
    d = Path(cache_dir)
    if not d.is_dir():
        raise CacheError(f"{d.absolute()}: " + ("is a file, not a cache directory" if d.exists() else
                         "no such directory (the default cache directory is cache/, config key cache.dir)"))
    out = []
    for p in sorted(d.iterdir()):
        if p.suffix.lower() not in STORE_SUFFIXES or p.name.endswith(".clips.zarr"):  # clips: dlkdd.cache.clips
            continue
        size, _ = disk_usage(p)
        row: dict[str, Any] = {"path": str(p), "size_bytes": size, "complete": False}
        try:
            with LogitStore.open(p) as s:
                m = s.meta
                done = s.done
                row.update(
                    fmt=s.fmt, teacher=_short(m.get("teacher_sha256")), teacher_kind=m.get("teacher_kind", "-"),
                    manifest=_short(m.get("manifest_sha256")), clips=s.num_clips, views=s.views_per_clip,
                    classes=s.num_classes, done=int(done.sum()), dtype=m.get("dtype"),
                    complete=bool(m.get("complete", False)) and bool(done.all()),
                )
        except CacheError as e:
            row["error"] = str(e)
        except Exception as e:  # a corrupt store must not break listing the others
            row["error"] = f"{p}: unreadable ({type(e).__name__}: {e})"
        row["verified"] = bool(verify and "error" not in row)
        if row["verified"]:
            row["problems"] = verify_store(p)
            row["complete"] = row["complete"] and not row["problems"]
        out.append(row)
    return out


def store_info(path: str | os.PathLike) -> dict[str, Any]:
    """All metadata of one store plus ``path``, ``fmt``, shapes, ``done``/``clips`` counts and sizes.

    Raises :class:`CacheError` if it cannot be opened.
    """
    with LogitStore.open(path) as s:
        m = s.meta
        done = s.done
        size, apparent = disk_usage(s.path)
        info = {
            "path": str(s.path), "fmt": s.fmt, **m,
            "shape": {"clips": s.num_clips, "views": s.views_per_clip, "classes": s.num_classes,
                      "view_params": s.view_params, "feature_dim": s.feature_dim},
            "rows_per_chunk": s.rows_per_chunk,
            "fields": {n: {"shape": list(shp), "dtype": dt} for n, (shp, dt) in s.fields.items()},
            "done": int(done.sum()), "clips": s.num_clips,
            "complete": bool(m.get("complete", False)) and bool(done.all()),
            "complete_flag": bool(m.get("complete", False)),
            "size_bytes": size, "apparent_bytes": apparent,
            "bytes_per_clip": (size / s.num_clips) if s.num_clips else 0.0,
        }
    return info


def verify_store(path: str | os.PathLike, manifest: Any = None, cfg: Any = None) -> list[str]:
    """Problems found in a store (empty list: OK). Reads every row.

    Checks: known schema version; ``complete`` flag set; every ``done`` true; keys present,
    non-empty and unique; (with ``manifest``: same keys in the same order, same classes, same
    manifest sha256; with ``cfg`` too: everything :func:`dlkdd.cache.match.check_store_matches`
    checks before a student trains - clip spec, views per clip, view seed); every value of every
    field of a done row finite; metadata consistent with the arrays (``num_clips`` = N = len(keys),
    ``num_classes`` = C = len(classes), ``views_per_clip`` = V, ``view_params`` = P, ``dtype`` = the
    logits dtype) and with itself and the teacher (:func:`_provenance`).
    """
    p = Path(path)
    try:
        s = LogitStore.open(p)
    except CacheError as e:
        return [str(e)]
    except Exception as e:
        return [f"{p}: unreadable ({type(e).__name__}: {e})"]
    problems: list[str] = []
    with s:
        try:
            _verify_open(s, manifest, problems)
            _provenance(s, problems)
            if cfg is not None and manifest is not None:
                from dlkdd.cache.match import store_differences

                seen = " ".join(problems)
                problems += [f"{p}: {d} - `dlkdd student` refuses it" for d in
                             store_differences(s, manifest, cfg, views=s.views_per_clip)
                             if d.split(":")[0].split(" (")[0] not in seen and not d.startswith(
                                 ("the store is incomplete", "classes differ", "manifest sha256", "keys "))]
        except CacheError as e:
            problems.append(str(e))
        except Exception as e:  # corrupt chunk etc.
            problems.append(f"{p}: unreadable data ({type(e).__name__}: {e})")
    return problems


def _verify_open(s: LogitStore, manifest: Any, problems: list[str]) -> None:
    """Every check of an open store: metadata against the arrays, keys, completeness, every written chunk,
    and (given) the manifest; each problem is appended to ``problems`` as one line."""
    if s.meta.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"{s.path}: schema_version {s.meta.get('schema_version')!r} is not {SCHEMA_VERSION}")
    keys = [str(k) for k in s.read_raw("keys").tolist()]
    logits, unreadable = _check_layout(s, keys, problems)
    _check_keys(s.path, keys, problems)
    done = s.done
    _check_done(s, keys, done, problems)
    _check_chunks(s, keys, done, {"logits": (logits, unreadable)}, problems)
    if manifest is not None:
        _check_manifest(s, keys, manifest, problems)


def _check_layout(s: LogitStore, keys: list[str], problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The metadata against the arrays (counts, classes, dtype); returns the logits as read chunk by
    chunk and the rows of unreadable chunks."""
    p, m = s.path, s.meta
    N, V, C, P = s.num_clips, s.views_per_clip, s.num_classes, s.view_params

    def expect(key: str, actual: Any, what: str) -> None:
        if key not in m:
            problems.append(f"{p}: metadata lacks {key!r}")
        elif m[key] != actual:
            problems.append(f"{p}: metadata {key}={m[key]!r} but {what} is {actual!r}")

    expect("num_clips", N, "the logits array's clip count")
    if len(keys) != N:
        problems.append(f"{p}: {len(keys)} keys but {N} logit rows")
    expect("num_classes", C, "the logits array's class count")
    expect("views_per_clip", V, "the logits array's view count")
    expect("view_params", P, "the views array's parameter count")
    vshape = s._backend_now().shape("views")
    if vshape[:2] != (N, V):
        problems.append(f"{p}: views array shape {vshape} does not match logits (N={N}, V={V})")
    classes = m.get("classes")
    if classes is None:
        problems.append(f"{p}: metadata lacks 'classes'")
    elif len(classes) != C:
        problems.append(f"{p}: metadata lists {len(classes)} classes but num_classes/logits have {C}")
    if N == 0:
        problems.append(f"{p}: holds no clips (built from an empty training list); rebuild it from a list with clips")
    logits, unreadable = _read_every_chunk(s, "logits", N)
    if "dtype" in m and str(logits.dtype) != m["dtype"]:
        problems.append(f"{p}: metadata dtype={m['dtype']!r} but logits are stored as {logits.dtype}")
    return logits, unreadable


def _check_keys(p: Any, keys: list[str], problems: list[str]) -> None:
    """No empty and no duplicate keys."""
    if any(not k for k in keys):
        problems.append(f"{p}: {sum(1 for k in keys if not k)} empty key(s)")
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dups = sorted({k for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]
        problems.append(f"{p}: {len(keys) - len(set(keys))} duplicate key(s): {dups[:_SHOW]}")


def _check_done(s: LogitStore, keys: list[str], done: np.ndarray, problems: list[str]) -> None:
    """The complete flag set, and every row done."""
    p, m = s.path, s.meta
    if not m.get("complete", False):
        problems.append(f"{p}: not complete (complete flag unset; {int(done.sum())}/{done.size} clips done) - "
                        f"resume `dlkdd cache-logits` to finish it")
    if not done.all():
        damaged = " - the store is marked complete, so a done chunk is missing (damaged)" if m.get("complete") else ""
        problems.append(f"{p}: {int((~done).sum())} clip(s) without logits (done=false){damaged}: "
                        f"{_names(keys, np.flatnonzero(~done))}")


def _check_chunks(s: LogitStore, keys: list[str], done: np.ndarray, arrays: dict[str, Any],
                  problems: list[str]) -> None:
    """Every chunk of the written rows of every field: readable, and finite (writes refuse NaN/inf, so NaN
    in a done row is a chunk that is missing - read as the NaN fill value - or damaged). ``arrays``
    holds the fields already read (the logits)."""
    p, N = s.path, s.num_clips
    for name in s.fields:  # views, and features or any other per-view field
        if name not in arrays:
            arrays[name] = _read_every_chunk(s, name, N)
    for name, (a, unread) in arrays.items():
        ok = np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1) if a.size else np.ones(a.shape[0], bool)
        ok[unread] = False
        bad = np.flatnonzero(done[: ok.size] & ~ok)
        if bad.size:
            problems.append(f"{p}: missing/unreadable {name} chunk for {bad.size} clip(s): {_names(keys, bad)} - "
                            f"the store is damaged; rebuild it (`dlkdd cache-logits ... --out {p} --overwrite`)")


def _check_manifest(s: LogitStore, keys: list[str], manifest: Any, problems: list[str]) -> None:
    """The store against a manifest: the same keys in the same order, classes and manifest hash."""
    p, m = s.path, s.meta
    mkeys = [str(k) for k in manifest.keys()]
    if mkeys != keys:
        missing = [k for k in mkeys if k not in set(keys)]
        extra = [k for k in keys if k not in set(mkeys)]
        if missing or extra:
            problems.append(f"{p}: keys differ from the manifest: {len(missing)} manifest key(s) missing "
                            f"{missing[:_SHOW]}, {len(extra)} extra {extra[:_SHOW]}")
        else:
            problems.append(f"{p}: same keys as the manifest but in another order")
    mclasses, classes = list(manifest.classes), m.get("classes")
    if classes is not None and list(classes) != mclasses:
        problems.append(f"{p}: classes {list(classes)} differ from the manifest's {mclasses}")
    msha = manifest.sha256()
    if m.get("manifest_sha256") != msha:
        problems.append(f"{p}: manifest_sha256 {_short(m.get('manifest_sha256'))} differs from the "
                        f"manifest's {_short(msha)}")


def _provenance(s: LogitStore, problems: list[str]) -> None:
    """Metadata that disagrees with itself or with the teacher it names: the clip spec against the
    config stored beside it, and - when the checkpoint at ``teacher_path`` is still there - its sha256
    and its class order (a store whose metadata was edited, or whose teacher file was replaced)."""
    from dlkdd.cache.keying import CLIP_SPEC_KEYS, clip_spec

    p, m = s.path, s.meta
    stored_cfg = (m.get("config") or {}).get("clip") if isinstance(m.get("config"), dict) else None
    if isinstance(m.get("clip"), dict) and isinstance(stored_cfg, dict):
        try:
            a, b = clip_spec(m["clip"]), clip_spec(stored_cfg)
        except (KeyError, TypeError, ValueError):
            a, b = m["clip"], stored_cfg
        diff = [k for k in CLIP_SPEC_KEYS if a.get(k) != b.get(k)]
        if diff:
            problems.append(f"{p}: metadata clip spec {', '.join(f'{k}={a.get(k)!r}' for k in diff)} disagrees with "
                            f"the config it was built with ({', '.join(f'{k}={b.get(k)!r}' for k in diff)}): the "
                            f"metadata was edited; rebuild the store")
    teacher = m.get("teacher_path")
    if not teacher or not Path(teacher).is_file():
        return
    from dlkdd.utils import sha256_file

    sha = sha256_file(teacher)
    if m.get("teacher_sha256") != sha:
        problems.append(f"{p}: metadata teacher_sha256 {str(m.get('teacher_sha256'))[:12]} is not the sha256 of the "
                        f"teacher it names, {teacher} ({sha[:12]}): the metadata was edited or the checkpoint replaced")
        return
    from dlkdd.errors import CheckpointError
    from dlkdd.train.checkpoint import load_checkpoint

    try:
        classes = load_checkpoint(teacher).get("classes")
    except CheckpointError:
        return
    if classes is not None and list(classes) != list(m.get("classes") or []):
        problems.append(f"{p}: metadata classes {m.get('classes')} differ from the order of the teacher's classes "
                        f"{list(classes)} ({teacher}): the metadata was edited; rebuild the store")


def _read_every_chunk(s: LogitStore, name: str, n: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(array (N,...), unreadable row indices)``: every row of ``name`` read from disk in blocks; a
    block that fails is read row by row, and a row that cannot be read is NaN in the array."""
    b = s._backend_now()
    shape = b.shape(name)
    out: np.ndarray | None = None
    bad: list[int] = []
    for lo in range(0, n, block):
        rows = np.arange(lo, min(n, lo + block))
        try:
            a = b.read(name, slice(lo, lo + rows.size))  # through the format's own reader (zarr checks checksums)
        except Exception:
            a = None
        if out is None:
            dt = a.dtype if a is not None else np.dtype(b.dtype(name))
            out = np.full((n, *shape[1:]), np.nan, dtype=dt)
        if a is not None:
            out[rows] = a
            continue
        for r in rows:
            try:
                out[r] = b.read(name, slice(int(r), int(r) + 1))[0]
            except Exception:
                bad.append(int(r))
    if out is None:
        out = np.zeros((0, *shape[1:]), dtype=np.dtype(b.dtype(name)))
    return out, np.asarray(bad, dtype=np.int64)


def soft_target_stats(path: str | os.PathLike, manifest: Any, taus: Sequence[float] = (1.0, 5.0)) -> dict[str, Any]:
    """:func:`soft_targets_of` the store at ``path`` (opened read-only for the call)."""
    with LogitStore.open(path) as s:
        return soft_targets_of(s, manifest, taus)


def soft_targets_of(s: LogitStore, manifest: Any, taus: Sequence[float] = (1.0, 5.0)) -> dict[str, Any]:
    """How informative an open store's soft targets are for the clips of ``manifest`` (its labels).

    Read from the cached logits ``z`` (N, V, C) alone, without the teacher:

    - ``view_top1``: % of stored views whose argmax is the clip's label (the teacher's
      training-set accuracy on exactly the views the student replays);
    - ``clip_top1``: the same after averaging each clip's V views' logits;
    - per temperature ``tau``, over all views, with ``p = softmax(z / tau)``:
      ``top_prob`` = mean max_c p, ``true_prob`` = mean p[label], and ``entropy_ratio`` =
      mean H(p) / log C (1.0 = uniform, i.e. a target that carries no information).

    Why it matters: the KL term of DL-KDD pulls the student towards ``p``; when ``view_top1`` is
    low or ``entropy_ratio`` is close to 1 at the training ``tau`` the distillation signal is
    mostly noise, and a student cannot be expected to beat the cross-entropy baseline.
    Returns a dict with those fields plus ``path``, ``clips``, ``views``, ``classes``.
    """
    have = list(s.meta.get("classes", []))
    if have != list(manifest.classes):
        raise CacheError(f"{s.path}: store classes {have} ({len(have)} classes) differ from the list's "
                         f"{list(manifest.classes)} ({manifest.num_classes} classes); the store was built "
                         f"for another dataset - pass that dataset's config, or build one with `dlkdd cache-logits`")
    rows = np.array([s.index_of(k) for k in manifest.keys()], dtype=np.int64)
    logits, _ = s.read_many(rows)
    z = logits.astype(np.float64)  # (N, V, C)
    y = np.asarray(manifest.labels(), dtype=np.int64)
    n, v, c = z.shape
    view_top1 = float((z.argmax(-1) == y[:, None]).mean() * 100.0)
    clip_top1 = float((z.mean(1).argmax(-1) == y).mean() * 100.0)
    per_tau = []
    for tau in taus:
        a = z / float(tau)
        a = a - a.max(-1, keepdims=True)
        p = np.exp(a)
        p /= p.sum(-1, keepdims=True)
        ent = -(p * np.log(np.clip(p, 1e-300, None))).sum(-1)
        per_tau.append({"tau": float(tau), "top_prob": float(p.max(-1).mean()),
                        "true_prob": float(np.take_along_axis(p, y[:, None, None].repeat(v, 1), -1).mean()),
                        "entropy_ratio": float(ent.mean() / np.log(c)) if c > 1 else 0.0})
    return {"path": str(s.path), "clips": n, "views": v, "classes": c, "view_top1": view_top1,
            "clip_top1": clip_top1, "taus": per_tau}
