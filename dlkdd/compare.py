"""Paired statistics between groups of runs scored on the same test clips (``dlkdd compare``).

In: ``groups`` - an ordered mapping ``name -> [Predictions, ...]`` (:mod:`dlkdd.predictions`),
one prediction file per run (seed). Every file must hold the same clips (keys and labels), the
same class list and the same test views, else :class:`CompareError` names the difference.
Out: a JSON-able dict (:func:`compare_groups`), a text table (:func:`format_report`) and a plot
(:func:`plot_report`).

Per model (its k seeds, N clips, C classes):

* top-1 per seed; mean, sample std and the 95% t-interval over seeds
  ``mean +- t_{0.975, k-1} * s / sqrt(k)`` (none for k = 1);
* above chance: per seed, the exact one-sided binomial test of ``X >= correct`` with
  ``X ~ Bin(N, 1/C)`` (:func:`binomial_above_chance`), and the Clopper-Pearson 95% interval of
  the seed's accuracy.

Per pair (``A`` = a later group, ``B`` = an earlier one, "is A better than B?"), on the same clips:

* the accuracy difference ``mean_seeds(acc_A) - mean_seeds(acc_B)`` with a **paired bootstrap**
  95% percentile interval (:func:`paired_bootstrap`): clips are resampled with replacement, the
  same clips for both models, and by default (``seeds="resampled"``) each model's seeds are
  resampled too, so the interval holds both the test-clip and the seed-to-seed variation;
  ``seeds="pooled"`` averages each model's correctness on a clip over its seeds first and
  resamples clips only (narrower: it ignores how much another seed would differ);
* the exact McNemar test (:func:`mcnemar_exact`) per seed pair (runs paired by their ``seed``
  when both groups have the same seeds, by the seeds both have when they share some, else in the
  order given) and pooled over the seed pairs
  (discordant counts summed; the same clips recur across seeds, so the pooled p-value is
  optimistic - read it with the bootstrap interval);
* clips won / lost / tied (seed-averaged correctness of A above / below / equal to B's);
* a verdict from the bootstrap interval: ``yes`` (lower bound > 0), ``no`` (upper bound < 0: B is
  better), else ``cannot tell with this many clips``;
* when the clip keys name their recording and some recording has several clips: the same interval
  with whole **recordings** resampled instead of clips (``paired_bootstrap(..., clusters=)``) and its
  verdict - the honest one when the test set is a few recordings cut into many clips;
* the clips one seed pair would need to detect a difference of the observed size
  (:func:`mcnemar_sample_size`, Connor 1987, with the discordant shares pooled over the seed
  pairs) at two-sided alpha 0.05 and power 0.8.

Per model and seed, when the clip keys name their recording (ARID's ``<Class>_<group>_<n>``;
``group_regex`` for others): **recordings right** (:func:`recording_votes`), the recordings whose
majority-predicted class is their label (a tie counts as wrong). Clips of one recording are not
independent draws - a model that memorised scenes predicts one class for most of them - so with few
test recordings this count, not the clip count, is the sample size to keep in mind.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from dlkdd.data.groups import ARID_GROUP_REGEX, compile_group_regex, group_of
from dlkdd.errors import DataError, DlkddError
from dlkdd.utils import save_figure

log = logging.getLogger(__name__)

__all__ = ["CompareError", "binomial_above_chance", "mcnemar_exact", "paired_bootstrap", "seed_interval",
           "mcnemar_sample_size", "recordings_of", "recording_votes", "check_comparable", "compare_groups", "format_report",
           "plot_report"]


class CompareError(DlkddError):
    """Runs that cannot be compared: other clips, classes or test views."""


# ----------------------------------------------------------------------------------- pure statistics
def binomial_above_chance(correct: int, n: int, num_classes: int) -> dict[str, Any]:
    """Exact one-sided binomial test of accuracy above chance ``p0 = 1/C``.

    ``p = P(X >= correct)``, ``X ~ Bin(n, p0)`` = ``sum_{k=correct}^{n} C(n,k) p0^k (1-p0)^(n-k)``
    (scipy.stats.binomtest, ``alternative="greater"``). Also the Clopper-Pearson (exact) 95%
    interval of the accuracy ``correct/n``. Returns ``{p_value, chance, ci: [lo, hi]}`` (fractions).
    """
    from scipy.stats import binomtest

    p0 = 1.0 / num_classes
    r = binomtest(int(correct), int(n), p0, alternative="greater")
    ci = binomtest(int(correct), int(n), p0).proportion_ci(0.95, method="exact")
    return {"p_value": float(r.pvalue), "chance": p0, "ci": [float(ci.low), float(ci.high)]}


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test, two-sided: ``b`` clips only A got right, ``c`` only B.

    Under H0 each discordant clip is A's with probability 1/2:
    ``p = min(1, 2 * sum_{k=0}^{min(b,c)} C(b+c, k) / 2^(b+c))`` (McNemar 1947; the exact form,
    e.g. Fagerland, Lydersen & Laake 2013, BMC Med Res Methodol 13:91). ``b + c = 0``: p = 1.
    """
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(b), n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, reps: int = 10000, seed: int = 0,
                     level: float = 0.95, clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Paired bootstrap of the accuracy difference ``mean(a) - mean(b)`` over clips.

    ``a``, ``b``: ``(N,)`` per-clip scores of two models on the same N clips (e.g. correctness,
    or correctness averaged over a model's seeds: "seeds pooled"), or ``(k_a, N)`` / ``(k_b, N)``
    correctness per seed ("seeds resampled"). Each replicate draws N clip indices with replacement,
    the same for both models (the pairing); with 2-D inputs it also draws each model's k seeds with
    replacement (independently per model), so the interval carries the seed-to-seed variation too
    (a two-level bootstrap, Davison & Hinkley 1997, sec. 3.8). The statistic is the mean over drawn
    seeds and clips of A minus that of B; the interval is the replicates' ``(1-level)/2`` and
    ``(1+level)/2`` percentiles (Efron & Tibshirani 1993, ch. 13). ``np.random.default_rng(seed)``.

    ``clusters``: ``(N,)`` labels (e.g. the recording of each clip). Then whole clusters are resampled
    instead of clips - G of the G clusters drawn with replacement, each bringing all its clips, the
    statistic the accuracy over the drawn clips (the cluster bootstrap, Davison & Hinkley 1997, sec.
    3.8; Field & Welsh 2007): clips of one recording are not independent, and with few recordings
    this interval is the honest one. One clip per cluster is the clip bootstrap again.
    Returns ``{diff, ci: [lo, hi], reps}`` (fractions).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != b.ndim or a.ndim not in (1, 2) or a.shape[-1] != b.shape[-1] or a.shape[-1] == 0:
        raise ValueError(f"paired_bootstrap needs two (N,) or (k,N) arrays over the same N clips, got {a.shape} "
                         f"and {b.shape}")
    a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
    resample_seeds = a.ndim == 2
    rng = np.random.default_rng(seed)
    n = a2.shape[1]
    sums, sizes = _cluster_sums((a2, b2), clusters)
    stats = np.empty(reps)
    chunk = max(1, 2_000_000 // (n * max(len(a2), len(b2))))
    for s in range(0, reps, chunk):
        m = min(chunk, reps - s)
        if sizes is None:
            draw = rng.integers(0, n, (m, n))  # (m, n): clip indices
        else:
            draw = rng.multinomial(len(sizes), np.full(len(sizes), 1.0 / len(sizes)), size=m).astype(np.float64)
        means = [_replicate_means(x, sx, draw, sizes, rng, resample_seeds) for x, sx in zip((a2, b2), sums)]
        stats[s:s + m] = means[0] - means[1]
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(a2.mean() - b2.mean()), "ci": [float(lo), float(hi)], "reps": int(reps)}


def _cluster_sums(xs: tuple[np.ndarray, ...], clusters: Sequence[Any] | None) -> tuple[list, np.ndarray | None]:
    """Per model ``(k, G)`` clips right per seed and cluster, and the ``(G,)`` cluster sizes; ``[None...], None``
    without clusters (the clip bootstrap)."""
    if clusters is None:
        return [None] * len(xs), None
    n = xs[0].shape[1]
    if len(clusters) != n:
        raise ValueError(f"paired_bootstrap: {len(clusters)} cluster labels for {n} clips")
    _, member = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    onehot = np.zeros((n, int(member.max()) + 1))
    onehot[np.arange(n), member] = 1.0
    return [x @ onehot for x in xs], onehot.sum(0)


def _replicate_means(x: np.ndarray, sx: np.ndarray | None, draw: np.ndarray, sizes: np.ndarray | None,
                     rng: np.random.Generator, resample_seeds: bool) -> np.ndarray:
    """``(m,)`` one model's accuracy in each of m replicates: on the drawn clips (``draw``: ``(m, n)``
    indices) or the drawn clusters' clips (``draw``: ``(m, G)`` counts), over its seeds (drawn with
    replacement when ``resample_seeds``)."""
    if sx is None:
        acc = x[:, draw].mean(-1)  # (k, m): each seed's accuracy on the drawn clips
    else:
        acc = (sx @ draw.T) / (draw @ sizes)  # (k, m): accuracy on the drawn clusters' clips
    if resample_seeds and len(x) > 1:
        w = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=len(draw)) / len(x)  # (m, k)
        return (w * acc.T).sum(1)
    return acc.mean(0)


def seed_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample std (ddof 1) and the t-interval ``mean +- t_{(1+level)/2, k-1} s / sqrt(k)`` over seeds."""
    v = np.asarray(values, dtype=np.float64)
    k = len(v)
    mean = float(v.mean())
    if k < 2:
        return {"mean": mean, "std": None, "ci": None, "k": k}
    from scipy.stats import t

    s = float(v.std(ddof=1))
    h = float(t.ppf((1 + level) / 2, k - 1)) * s / math.sqrt(k)
    return {"mean": mean, "std": s, "ci": [mean - h, mean + h], "k": k}


def mcnemar_sample_size(p10: float, p01: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Clips needed for a two-sided McNemar test to detect a paired difference (Connor 1987).

    ``p10``: share of clips only A gets right, ``p01``: only B. With ``psi = p10 + p01`` (discordant
    share) and ``delta = p10 - p01`` (the accuracy difference),

        n = ( z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2) )^2 / delta^2

    (R. J. Connor, "Sample size for testing differences in proportions for the paired-sample
    design", Biometrics 43:207-211, 1987). ``inf`` when ``delta == 0``.
    """
    from scipy.stats import norm

    psi, delta = float(p10) + float(p01), float(p10) - float(p01)
    if delta == 0:
        return math.inf
    za, zb = float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))
    return (za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / (delta * delta)


# ----------------------------------------------------------------------------------- checks
def recordings_of(keys: Sequence[str], regex: str | None = None) -> list[str] | None:
    """The recording of each clip key (``regex``, default ARID's ``<Class>_<group>_<n>``,
    :data:`dlkdd.data.groups.ARID_GROUP_REGEX`); None when a key names none."""
    pattern = compile_group_regex(regex or ARID_GROUP_REGEX)
    try:
        return [group_of(k, pattern) for k in keys]
    except DataError:
        return None


def recording_votes(keys: Sequence[str], labels: np.ndarray, pred: np.ndarray,
                    regex: str | None = None) -> dict[str, Any] | None:
    """Majority vote per recording: ``{"n": recordings, "correct": right ones, "by_recording": {group:
    {"label", "vote" (None on a tie), "clips", "clips_right"}}}``; None when a key names no recording.

    ``regex``: the group regex (default ARID's, :data:`dlkdd.data.groups.ARID_GROUP_REGEX`)."""
    recs = recordings_of(keys, regex)
    if recs is None:
        return None
    members: dict[str, list[int]] = {}
    for i, g in enumerate(recs):
        members.setdefault(g, []).append(i)
    out: dict[str, Any] = {}
    for g, idx in members.items():
        top = Counter(int(pred[i]) for i in idx).most_common(2)
        vote = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None
        out[g] = {"label": int(labels[idx[0]]), "vote": vote, "clips": len(idx),
                  "clips_right": int(sum(int(pred[i]) == int(labels[i]) for i in idx))}
    return {"n": len(out), "correct": sum(v["vote"] == v["label"] for v in out.values()), "by_recording": out}


def _name(group: str, p: Any) -> str:
    return f"{group} ({p.path or 'in memory'})"


def check_comparable(groups: Mapping[str, Sequence[Any]]) -> None:
    """Refuse (:class:`CompareError`) prediction sets scored on different clips, labels, classes or views."""
    items = [(g, p) for g, ps in groups.items() for p in ps]
    if not items:
        raise CompareError("nothing to compare")
    for g, ps in groups.items():
        if not ps:
            raise CompareError(f"group {g} has no runs")
    g0, ref = items[0]
    ref_labels = dict(zip(ref.keys, ref.labels.tolist()))
    for g, p in items[1:]:
        if list(p.classes) != list(ref.classes):
            raise CompareError(f"class lists differ: {_name(g, p)} has {list(p.classes)}, {_name(g0, ref)} has "
                               f"{list(ref.classes)}")
        if set(p.keys) != set(ref_labels):
            only_p = sorted(set(p.keys) - set(ref_labels))
            only_r = sorted(set(ref_labels) - set(p.keys))
            raise CompareError(
                f"clip lists differ: {_name(g, p)} has {len(p)} clips, {_name(g0, ref)} {len(ref)}; "
                + (f"{len(only_p)} only in the first ({', '.join(only_p[:3])}{', ...' if len(only_p) > 3 else ''})"
                   if only_p else "none only in the first")
                + (f", {len(only_r)} only in the second ({', '.join(only_r[:3])}{', ...' if len(only_r) > 3 else ''})"
                   if only_r else ""))
        diff = [k for k, lab in zip(p.keys, p.labels.tolist()) if ref_labels[k] != lab]
        if diff:
            raise CompareError(f"labels differ on {len(diff)} clips between {_name(g, p)} and {_name(g0, ref)} "
                               f"(first: {diff[0]})")
        va, vb = p.meta.get("views"), ref.meta.get("views")
        if va != vb:
            if isinstance(va, dict) and isinstance(vb, dict):
                what = ", ".join(f"{k} {va.get(k)} vs {vb.get(k)}" for k in sorted(set(va) | set(vb))
                                 if va.get(k) != vb.get(k))
            else:
                what = f"{va} vs {vb}"
            raise CompareError(f"test views differ: {_name(g, p)} vs {_name(g0, ref)}: {what}")


# ----------------------------------------------------------------------------------- the report
def _pair_runs(a: Sequence[Any], b: Sequence[Any]) -> tuple[list[tuple[int, int]], str]:
    sa = [p.meta.get("seed") for p in a]
    sb = [p.meta.get("seed") for p in b]
    if None not in sa and None not in sb and len(set(sa)) == len(sa) and len(set(sb)) == len(sb):
        common = sorted(set(sa) & set(sb))
        if set(sa) == set(sb):
            return [(sa.index(s), sb.index(s)) for s in common], "by seed"
        if common:  # e.g. 2 seeds of one model against 3 of another: the seeds both have
            return [(sa.index(s), sb.index(s)) for s in common], f"by seed, the {len(common)} both have"
    k = min(len(a), len(b))
    return [(i, i) for i in range(k)], f"in the order given ({k} pair(s))"


_BOOT = {"resampled": "paired over clips (resampled with replacement, the same clips for both) and seeds "
                      "resampled with replacement within each model (two-level)",
         "pooled": "paired over clips (resampled with replacement, the same clips for both); seeds pooled "
                   "(per-clip correctness averaged over each model's seeds, not resampled: seed-to-seed "
                   "variation is not in the interval)"}


def _verdict(lo: float, hi: float, b: str, unit: str) -> str:
    if lo > 0:
        return "yes"
    if hi < 0:
        return f"no ({b} is better)"
    return f"cannot tell with this many {unit}"


def compare_groups(groups: Mapping[str, Sequence[Any]], reps: int = 10000, seed: int = 0,
                   alpha: float = 0.05, power: float = 0.8, seeds: str = "resampled",
                   against: Sequence[str] | None = None) -> dict[str, Any]:
    """The full comparison (see the module docstring) as a JSON-able dict ``{clips, classes, views, models, pairs}``.

    ``against``: only the pairs whose earlier group is one of these names (default: every pair)."""
    check_comparable(groups)
    if seeds not in _BOOT:
        raise ValueError(f"seeds must be resampled or pooled, got {seeds!r}")
    first = next(iter(groups.values()))[0]
    keys = list(first.keys)
    C = len(first.classes)
    correct = {g: np.stack([p.aligned(keys).correct for p in ps]).astype(np.float64) for g, ps in groups.items()}
    recordings = recordings_of(keys)
    if recordings is not None and len(set(recordings)) == len(recordings):
        recordings = None  # every clip its own recording: the clip bootstrap is already the answer
    models = [_model_summary(g, ps, correct[g], keys, C, alpha) for g, ps in groups.items()]
    ctx = {"reps": reps, "seed": seed, "alpha": alpha, "power": power, "seeds": seeds, "recordings": recordings}
    names = list(groups)
    pairs = [_pair_summary(names[j], names[i], groups, correct, ctx)
             for j in range(1, len(names)) for i in range(j) if against is None or names[i] in against]
    return {"clips": len(keys), "classes": list(first.classes), "chance": 100.0 / C, "views": first.meta.get("views"),
            "alpha": alpha, "power": power, "models": models, "pairs": pairs}


def _model_summary(g: str, ps: Sequence[Any], correct: np.ndarray, keys: list[str], C: int,
                   alpha: float) -> dict[str, Any]:
    """One model's seeds: top-1, the exact binomial test against chance, recordings right."""
    N = len(keys)
    rows = []
    for p, c in zip(ps, correct):
        bt = binomial_above_chance(int(c.sum()), N, C)
        al = p.aligned(keys)
        rows.append({"path": p.path, "seed": p.meta.get("seed"), "top1": 100.0 * float(c.mean()),
                     "correct": int(c.sum()), "p_above_chance": bt["p_value"],
                     "ci": [100 * bt["ci"][0], 100 * bt["ci"][1]],
                     "recordings": recording_votes(keys, al.labels, al.pred)})
    above = sum(s["p_above_chance"] < alpha for s in rows)
    verdict = "yes" if above == len(rows) else ("no" if above == 0 else f"mixed ({above} of {len(rows)} seeds)")
    return {"name": g, **seed_interval([100.0 * float(c.mean()) for c in correct]), "seeds": rows,
            "above_chance": verdict}


def _pair_summary(a: str, b: str, groups: Mapping[str, Sequence[Any]], correct: Mapping[str, np.ndarray],
                  ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Is ``a`` better than ``b``: paired bootstrap (clips, and recordings where known), McNemar, won/lost."""
    reps, seed, alpha, seeds, recordings = ctx["reps"], ctx["seed"], ctx["alpha"], ctx["seeds"], ctx["recordings"]
    N = correct[a].shape[1]
    xa, xb = (correct[a], correct[b]) if seeds == "resampled" else (correct[a].mean(0), correct[b].mean(0))
    boot = paired_bootstrap(xa, xb, reps=reps, seed=seed, level=1 - alpha)
    pairing, how = _pair_runs(groups[a], groups[b])
    per_seed = []
    B = Cc = 0
    for ia, ib in pairing:
        ca, cb = correct[a][ia].astype(bool), correct[b][ib].astype(bool)
        bb, cc = int((ca & ~cb).sum()), int((~ca & cb).sum())
        B, Cc = B + bb, Cc + cc
        per_seed.append({"seed_a": groups[a][ia].meta.get("seed"), "seed_b": groups[b][ib].meta.get("seed"),
                         "a_only": bb, "b_only": cc, "p": mcnemar_exact(bb, cc)})
    ma, mb = correct[a].mean(0), correct[b].mean(0)
    lo, hi = boot["ci"]
    verdict = _verdict(lo, hi, b, "clips")
    by_rec = None
    if recordings is not None:
        rlo, rhi = paired_bootstrap(xa, xb, reps=reps, seed=seed, level=1 - alpha, clusters=recordings)["ci"]
        by_rec = {"recordings": len(set(recordings)), "ci": [100 * rlo, 100 * rhi],
                  "verdict": _verdict(rlo, rhi, b, "recordings")}
    k = max(1, len(pairing))
    need = mcnemar_sample_size(B / (k * N), Cc / (k * N), alpha, ctx["power"])
    return {"a": a, "b": b, "diff": 100 * boot["diff"], "ci": [100 * lo, 100 * hi], "bootstrap_reps": reps,
            "bootstrap": _BOOT[seeds], "seeds": seeds, "pairing": how, "mcnemar": per_seed,
            "mcnemar_pooled": {"a_only": B, "b_only": Cc, "p": mcnemar_exact(B, Cc)},
            "won": int((ma > mb).sum()), "lost": int((ma < mb).sum()), "tied": int((ma == mb).sum()),
            "verdict": verdict, "by_recording": by_rec,
            "clips_needed": None if math.isinf(need) else int(math.ceil(need)),
            "sentence": f"{a} better than {b} at {100 * (1 - alpha):g}%: {verdict}"}


def _f(v: Any, fmt: str = "5.1f") -> str:
    return "  n/a" if v is None else format(v, fmt)


def format_report(r: Mapping[str, Any]) -> str:
    """A readable text table of :func:`compare_groups`' result."""
    out = [f"{r['clips']} test clips, {len(r['classes'])} classes (chance {r['chance']:.1f}%), views {r['views']}"]
    level = f"{100 * (1 - r['alpha']):g}%"
    w = max([len(m["name"]) for m in r["models"]] + [5])
    out.append(f"{'model':<{w}}  seeds  top-1 mean    std   95% CI (seeds)   {'above chance':<20}  per seed")
    for m in r["models"]:
        ci = f"[{m['ci'][0]:5.1f}, {m['ci'][1]:5.1f}]" if m["ci"] else "    (1 seed)  "
        per = "  ".join(f"{s['top1']:.1f}" + (f"(s{s['seed']})" if s["seed"] is not None else "")
                        + ("" if s["p_above_chance"] < r["alpha"] else "*") for s in m["seeds"])
        out.append(f"{m['name']:<{w}}  {m['k']:>5}  {m['mean']:10.1f}  {_f(m['std'])}   {ci}   {m['above_chance']:<20}  "
                   f"{per}")
    out.append("  (* : that seed is not above chance, exact binomial test, one-sided, alpha "
               f"{r['alpha']:g})")
    if all(s.get("recordings") for m in r["models"] for s in m["seeds"]):
        n_rec = r["models"][0]["seeds"][0]["recordings"]["n"]
        out.append(f"recordings right (majority vote of a recording's clips; {n_rec} test recordings, chance "
                   f"{n_rec / len(r['classes']):.1f}), per seed:")
        for m in r["models"]:
            out.append(f"  {m['name']:<{w}}  " + "  ".join(f"{s['recordings']['correct']}/{s['recordings']['n']}"
                                                       for s in m["seeds"]))
    for p in r["pairs"]:
        out.append("")
        out.append(f"{p['a']} vs {p['b']}: difference {p['diff']:+.1f} pp, {level} CI [{p['ci'][0]:+.1f}, {p['ci'][1]:+.1f}]"
                   f" (paired bootstrap over clips, {p['bootstrap_reps']} reps, seeds {p['seeds']})")
        out.append(f"  clips won/lost/tied: {p['won']}/{p['lost']}/{p['tied']}; McNemar exact, pairs {p['pairing']}: "
                   + ", ".join(f"{s['a_only']}:{s['b_only']} p={s['p']:.3g}" for s in p["mcnemar"])
                   + f"; pooled {p['mcnemar_pooled']['a_only']}:{p['mcnemar_pooled']['b_only']} "
                     f"p={p['mcnemar_pooled']['p']:.3g}")
        out.append(f"  {p['sentence']}  {_power_note(p, r)}")
        rec = p.get("by_recording")
        if rec:
            out.append(f"  resampling the {rec['recordings']} test recordings instead of clips (clips of one recording "
                       f"are not independent): {level} CI [{rec['ci'][0]:+.1f}, {rec['ci'][1]:+.1f}]; "
                       f"better at {level}: {rec['verdict']}")
    return "\n".join(out)


def _power_note(p: Mapping[str, Any], r: Mapping[str, Any]) -> str:
    """How many test clips a difference this size needs, or why that cannot be said."""
    need, pooled = p["clips_needed"], p["mcnemar_pooled"]
    if need:
        return (f"(one seed pair needs about {need} test clips to detect a difference this size with "
                f"{100 * r['power']:g}% power; there are {r['clips']})")
    if pooled["a_only"] == pooled["b_only"] == 0:
        return "(the two never disagree on a clip: no difference observed)"
    return (f"(the clips only one of them gets right balance, {pooled['a_only']}:{pooled['b_only']} over the seed "
            f"pairs: no test-set size can be estimated from them)")


def bootstrap_warning(reps: int, alpha: float) -> str | None:
    """A warning when too few bootstrap replicates lie beyond each end of the interval for its level to mean much
    (a percentile interval needs at least ~10 there; Efron & Tibshirani 1993, ch. 13, ask for 1000+ replicates)."""
    beyond = reps * alpha / 2
    if beyond >= 10:
        return None
    need = int(math.ceil(20 / alpha))
    return (f"only {beyond:g} of the {reps} bootstrap replicates lie beyond each end of the "
            f"{100 * (1 - alpha):g}% interval, which is then little more than the extreme replicates: use "
            f"--bootstrap {need} or more")


def plot_report(r: Mapping[str, Any], path: Any) -> Any:
    """Left: per-seed top-1 of each model, its mean and 95% t-interval, chance line. Right: each
    pair's difference with its paired-bootstrap 95% interval. PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = r["pairs"]
    fig, axes = plt.subplots(1, 2 if pairs else 1, squeeze=False,
                             figsize=(11 if pairs else 5.5, max(3.8, 1.2 + 0.28 * len(pairs))))
    ax = axes[0][0]
    for x, m in enumerate(r["models"]):
        ax.scatter([x] * len(m["seeds"]), [s["top1"] for s in m["seeds"]], color="0.5", s=14, zorder=2)
        if m["ci"]:
            ax.errorbar([x], [m["mean"]], yerr=[[m["mean"] - m["ci"][0]], [m["ci"][1] - m["mean"]]], fmt="o",
                        color="C0", capsize=4, zorder=3)
        else:
            ax.plot([x], [m["mean"]], "o", color="C0")
    ax.axhline(r["chance"], color="C3", ls="--", lw=1, label=f"chance {r['chance']:.1f}%")
    ax.set_xticks(range(len(r["models"])), [m["name"] for m in r["models"]], rotation=30, ha="right")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"per seed, mean and 95% CI ({r['clips']} clips)", fontsize=9)
    ax.legend(fontsize=8)
    if pairs:
        ax = axes[0][1]
        def colour(verdict: str) -> str:
            return "C2" if verdict == "yes" else ("C3" if verdict.startswith("no") else "0.4")

        by_rec = any(p.get("by_recording") for p in pairs)
        for y, p in enumerate(pairs):
            rec = p.get("by_recording")
            if rec:  # the recording-resampled interval, thin and just below the clip one
                ax.errorbar([p["diff"]], [y + 0.25], xerr=[[p["diff"] - rec["ci"][0]], [rec["ci"][1] - p["diff"]]],
                            fmt="s", ms=3, lw=0.8, color=colour(rec["verdict"]), capsize=2)
            ax.errorbar([p["diff"]], [y], xerr=[[p["diff"] - p["ci"][0]], [p["ci"][1] - p["diff"]]], fmt="o",
                        color=colour(p["verdict"]), capsize=4)
        ax.axvline(0, color="0.3", lw=1)
        ax.set_yticks(range(len(pairs)), [f"{p['a']} - {p['b']}" for p in pairs])
        ax.invert_yaxis()
        ax.set_xlabel("top-1 difference (pp), paired bootstrap 95% CI"
                      + ("\nthick: clips resampled; thin: recordings" if by_rec else ""))
        ax.set_title("pairs (green: better at 95%)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
