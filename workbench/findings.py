"""The papers' claims, decided with statistics.

:func:`decide` is the one decision rule: an effect, its 95 % confidence interval, a p-value in the
paper's direction, the test's name and ``n``, and a verdict -- ``"held"`` only when the interval
excludes 0 in the paper's direction, ``"not held"`` only when it excludes 0 the other way,
``"inconclusive"`` otherwise (including ``n < 2``).

Each claim function takes probe outputs, one per training seed (a single output counts as one
seed), and returns a :class:`Claim`. The unit of the test follows the design:

* two or more seeds: each seed is summarised by its mean over images / minibatches and the seeds
  are the sample (a t-test): the interval covers training randomness;
* one seed: the images or minibatches inside that run are the sample (bootstrap interval,
  sign-flip permutation p): the interval covers only which images were drawn, and the claim says
  so. Claims measured once per run (fusion movement) stay inconclusive with one seed.

Notebooks call these on one seed (``make figures``); ``analysis/evidence.py`` on several seeds.
Both write ``claims.json`` and, through :func:`findings_markdown`, ``findings.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .results import AsDict

DIRECTIONS = ("greater", "less")
VERDICTS = ("held", "not held", "inconclusive")
TESTS = ("t", "bootstrap")
HIGH_RATIOS = (0.6, 0.9)  # MAE Fig. 5: accuracy peaks in this range of mask ratios


# ----------------------------------------------------------------------------- the decision rule
@dataclass
class Decision(AsDict):
    effect: float  # mean of a; of b - a (paired); difference of means b - a (unpaired)
    ci: list[float]  # two-sided (1 - alpha) interval [low, high]; [nan, nan] when n < 2
    p: float  # one-sided p-value in the paper's direction (nan when n < 2)
    n: int  # sample size of the test (pairs, or both groups together)
    test: str  # the test's name
    verdict: str  # "held" | "not held" | "inconclusive"
    direction: str  # the paper's direction: "greater" (effect > 0) or "less"


def _clean(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values ({int((~np.isfinite(a)).sum())} of "
                         f"{a.size}): decide() needs finite numbers")
    return a


def verdict_of(ci: Sequence[float], direction: str) -> str:
    """"held" when the interval excludes 0 in ``direction``, "not held" when it excludes 0 the
    other way, else "inconclusive"."""
    low, high = float(ci[0]), float(ci[1])
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    above, below = low > 0, high < 0
    if direction == "greater":
        return "held" if above else "not held" if below else "inconclusive"
    return "held" if below else "not held" if above else "inconclusive"


def decide(a, b=None, *, paired: bool = False, direction: str = "greater", alpha: float = 0.05,
           test: str = "t", n_resamples: int = 9999, seed: int = 0) -> Decision:
    """Decide whether the effect goes the paper's way (see the module docstring).

    * ``b is None``: the effect is ``mean(a)``;
    * ``paired=True``: ``mean(b - a)`` over pairs (same seeds, images or minibatches);
    * otherwise the difference of means ``mean(b) - mean(a)`` of two independent groups.

    ``test="t"``: Student's t (one-sample / paired) or Welch's t (unpaired) interval and p-value
    (:func:`scipy.stats.ttest_1samp`, :func:`scipy.stats.ttest_ind`), the right choice for a few
    seeds. ``test="bootstrap"``: a BCa bootstrap interval of the mean (:func:`scipy.stats.bootstrap`;
    percentile when BCa is undefined) with a permutation p-value
    (:func:`scipy.stats.permutation_test`: sign flips for one-sample / paired, relabelling for two
    groups), for many images or minibatches. ``p`` is one-sided in ``direction``; the verdict uses
    the two-sided ``1 - alpha`` interval, so "held" means one-sided p < alpha / 2.
    """
    from scipy import stats

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    a = _clean(a, "a")
    if b is not None:
        b = _clean(b, "b")
        if paired and b.size != a.size:
            raise ValueError(f"paired samples need equal sizes, got {a.size} and {b.size}")
    elif paired:
        raise ValueError("paired=True needs b")
    one = b is None or paired
    d = (a if b is None else b - a) if one else None
    groups = (d,) if one else (b, a)
    effect = float(d.mean()) if one else float(b.mean() - a.mean())
    n = a.size if one else a.size + b.size
    kind = ("one-sample" if b is None else "paired") if one else "two-sample"
    small = min(g.size for g in groups) < 2
    if small or all(np.ptp(g) == 0 for g in groups):
        # no spread to estimate from: only a constant sample far from 0 would settle it, and a
        # constant sample says nothing about the next one
        name = f"{kind} {'t' if test == 't' else 'bootstrap'} (n too small or no spread)"
        return Decision(effect, [float("nan")] * 2, float("nan"), int(n), name, "inconclusive",
                        direction)
    if test == "t":
        res = stats.ttest_1samp(d, 0.0) if one else stats.ttest_ind(b, a, equal_var=False)
        ci = res.confidence_interval(1 - alpha)
        lo, hi = float(ci.low), float(ci.high)
        t = float(res.statistic)
        p = float(res.pvalue) / 2
        p = p if (t > 0) == (direction == "greater") else 1 - p
        name = f"{kind} t-test" if one else "Welch t-test"
    else:
        rng = np.random.default_rng(seed)
        diff = (lambda x, axis=-1: np.mean(x, axis=axis)) if one else \
            (lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis))
        lo, hi = _bootstrap_ci(groups, diff, 1 - alpha, n_resamples, rng)
        perm = stats.permutation_test(groups, diff, vectorized=True, n_resamples=n_resamples,
                                      permutation_type="samples" if one else "independent",
                                      alternative=direction, random_state=rng)
        p = float(perm.pvalue)
        name = f"{kind} bootstrap CI (BCa) + {'sign-flip' if one else 'relabelling'} permutation p"
    return Decision(effect, [lo, hi], p, int(n), name, verdict_of((lo, hi), direction), direction)


def _bootstrap_ci(groups, statistic, level: float, n_resamples: int, rng) -> tuple[float, float]:
    import warnings

    from scipy import stats

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa on a degenerate sample: nan, then percentile
            res = stats.bootstrap(groups, statistic, vectorized=True, paired=False,
                                  confidence_level=level, n_resamples=n_resamples,
                                  method=method, random_state=rng)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi
    return float("nan"), float("nan")


# ----------------------------------------------------------------------------- claims
@dataclass
class Claim(AsDict):
    source: str  # where the paper says it
    claim: str  # the claim as the paper states it
    effect_name: str  # what ``effect`` measures, with the paper's sign
    measured: str  # the numbers behind it, in words
    effect: float
    ci: list[float]
    p: float
    n: int  # units of the test (seeds, or images / minibatches within one seed)
    sizes: dict[str, int]  # every count behind the claim: seeds, images, minibatches, ...
    test: str
    verdict: str
    direction: str
    note: str = ""  # what the interval does not cover

    @property
    def held(self) -> bool | None:
        return {"held": True, "not held": False}.get(self.verdict)

    def to_dict(self) -> dict:
        """JSON-ready, with a missing interval or p (n too small) as null, not NaN."""
        d = super().to_dict()
        d["ci"] = [_finite_or_none(x) for x in d["ci"]]
        d["p"], d["effect"] = _finite_or_none(d["p"]), _finite_or_none(d["effect"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _finite_or_none(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _seeds(x, ndim: int | None = None) -> list:
    """One probe output or a list of them (one per seed) -> a list. For array inputs ``ndim`` is
    the number of dimensions of one seed's values, so that a plain list of numbers (e.g. read
    from JSON) counts as one seed, and a list of such lists as several."""
    if not isinstance(x, (list, tuple)):
        return [x]
    if ndim is not None:
        try:
            if np.asarray(x, dtype=float).ndim == ndim:
                return [x]
        except (TypeError, ValueError):  # ragged: seeds of different sizes
            pass
    return list(x)


ONE_SEED_NOTE = ("one training seed: the interval covers the {unit} drawn, not training "
                 "randomness")


def decide_over_seeds(samples: Sequence, *, direction: str, unit: str, paired: bool = False,
                      seed: int = 0) -> tuple[Decision, dict[str, int], str]:
    """Per-seed samples (arrays over ``unit``: images, minibatches; or one number per seed) ->
    (decision, sizes, note). Two or more seeds: a t-test over the seeds' means. One seed: a
    bootstrap over its units (the note says what that leaves out). ``paired``: the samples are
    MFF − MAE differences on the same seeds / items (named so in the test)."""
    d, sizes, note = _decide_over_seeds(samples, direction, unit, seed)
    if paired:
        d.test = d.test.replace("one-sample", "paired", 1)
    return d, sizes, note


def _decide_over_seeds(samples, direction: str, unit: str, seed: int):
    arrays = [np.asarray(s, dtype=float).reshape(-1) for s in samples]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError(f"every seed needs at least one value (got sizes "
                         f"{[a.size for a in arrays]})")
    sizes = {"seeds": len(arrays)}
    within = sum(a.size for a in arrays)
    if within > len(arrays):
        sizes[unit] = within
    if len(arrays) >= 2:
        return decide([a.mean() for a in arrays], direction=direction, test="t"), sizes, ""
    if arrays[0].size == 1:
        return (decide(arrays[0], direction=direction),
                sizes, "one training seed and one value per seed: needs more seeds")
    return (decide(arrays[0], direction=direction, test="bootstrap", seed=seed), sizes,
            ONE_SEED_NOTE.format(unit=unit))


def make_claim(source: str, claim: str, effect_name: str, measured: str, samples: Sequence, *,
               direction: str, unit: str, paired: bool = False, note: str = "") -> Claim:
    d, sizes, why = decide_over_seeds(samples, direction=direction, unit=unit, paired=paired)
    return Claim(source, claim, effect_name, measured, d.effect, d.ci, d.p, d.n, sizes, d.test,
                 d.verdict, direction, "; ".join(x for x in (note, why) if x))


def _weighted_depth(weights: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """[T, L] fusion weights over fused layers -> [T] weighted mean depth (0 first, 1 last)."""
    layers = np.asarray(layers, dtype=float)
    return weights @ (layers / max(1.0, layers.max()))


def fusion_moves_shallow(histories) -> Claim:
    """MFF finding 1: during pretraining the fusion weights move toward shallow layers. Effect per
    seed: weighted mean depth of the fused layers at the end minus at initialisation (step 0)."""
    shifts, starts = [], []
    for h in _seeds(histories):
        depth = _weighted_depth(np.asarray(h.weights, dtype=float), h.layers)
        shifts.append(depth[-1] - depth[0])
        starts.append(int(h.steps[0]))
    note = "" if all(s == 0 for s in starts) else \
        f"first logged step {max(starts)} is not the initialisation (run predates step-0 logs)"
    return make_claim("MFF §3 (Fig. 1)", "during pretraining the fusion weights move toward "
                      "shallow layers", "Δ weighted depth of the fusion (end − init; < 0 = shallower)",
                      "per-seed Δ depth " + _listed(shifts), shifts, direction="less",
                      unit="seeds", note=note)


def supervised_fusion_favors_last(histories) -> Claim:
    """MFF finding 4: a supervised ViT with the same fusion puts most weight on the last layer.
    Effect per seed: final last-layer weight minus the largest other weight."""
    margins, last = [], []
    for h in _seeds(histories):
        w = np.asarray(h.weights, dtype=float)[-1]
        margins.append(w[-1] - w[:-1].max())
        last.append(w[-1])
    return make_claim("MFF §3 (supervised ViT)", "with a supervised objective the same fusion puts "
                      "most weight on the last layer", "final last-layer weight − largest other "
                      "weight", f"final last-layer weight {_listed(last)} (uniform "
                      f"{1 / len(w):.3f})", margins, direction="greater", unit="seeds")


def _high_frequency_rows(r) -> np.ndarray:
    """[images, layers] value at the highest frequency: per image when the response kept them,
    else one row (the response's mean over images)."""
    per_image = r.image_high_frequency
    return np.asarray(per_image if per_image is not None else r.high_frequency[None], dtype=float)


def _depth_slope(values: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Least-squares slope over depth of [..., L] values (one slope per leading index)."""
    x = depth - depth.mean()
    return (values - values.mean(-1, keepdims=True)) @ x / (x @ x)


def shallow_layers_more_high_frequency(name: str, responses) -> Claim:
    """MFF finding 2 / Park & Kim: shallow layers carry more high frequency -- the Δ log amplitude
    at the highest frequency falls with depth. Effect: its least-squares slope over normalised
    depth (per image when the response has per-image curves, else per seed)."""
    samples, firsts, lasts = [], [], []
    for r in _seeds(responses):
        rows = r.block_rows
        depth = np.asarray(r.depth, dtype=float)[rows]
        samples.append(_depth_slope(_high_frequency_rows(r)[:, rows], depth))
        firsts.append(float(r.high_frequency[rows[0]]))
        lasts.append(float(r.high_frequency[rows[-1]]))
    return make_claim("MFF §3 (Fig. 2)", f"{name}: shallow layers carry more high-frequency signal",
                      "slope of Δ log amplitude at the highest frequency over depth (< 0 = "
                      "shallow layers higher)", f"first block {_listed(firsts, '+.3f')}, last "
                      f"block {_listed(lasts, '+.3f')}", samples, direction="less", unit="images")


def _paired_rows(mae_values: np.ndarray, mff_values: np.ndarray, what: str) -> np.ndarray:
    if mae_values.shape != mff_values.shape:
        raise ValueError(f"{what}: MAE and MFF must be measured on the same items (shapes "
                         f"{list(mae_values.shape)} and {list(mff_values.shape)})")
    return mff_values - mae_values


def mff_last_layer_less_high_frequency(mae, mff) -> Claim:
    """MFF finding 2: MFF's last layer carries less high frequency than MAE's. Effect: MFF − MAE
    Δ log amplitude at the highest frequency of the last block, paired on the same images."""
    samples, a_means, b_means = [], [], []
    for ra, rb in zip(_seeds(mae), _seeds(mff), strict=True):
        a = _high_frequency_rows(ra)[:, ra.last_block_row]
        b = _high_frequency_rows(rb)[:, rb.last_block_row]
        samples.append(_paired_rows(a, b, "last-layer frequency"))
        a_means.append(a.mean())
        b_means.append(b.mean())
    return make_claim("MFF §4.3 (Fig. 5)", "MFF's last layer carries less high frequency than MAE's",
                      "MFF − MAE Δ log amplitude at the highest frequency, last block",
                      f"MAE {_listed(a_means, '+.3f')}, MFF {_listed(b_means, '+.3f')}", samples,
                      direction="less", unit="images", paired=True)


def mff_flatter_hessian(mae_eigs, mff_eigs) -> Claim:
    """MFF finding 3: MFF's Hessian max eigenvalues are smaller (a flatter loss). Effect per
    minibatch: the mean over the top k of log(|λ_i MFF| / |λ_i MAE|), both models on the same
    minibatches and masks."""
    samples, ks, a_med, b_med = [], set(), [], []
    for a, b in zip(_seeds(mae_eigs, 2), _seeds(mff_eigs, 2), strict=True):
        a = torch.as_tensor(a, dtype=torch.float64).abs().numpy()  # [batches, k]
        b = torch.as_tensor(b, dtype=torch.float64).abs().numpy()
        if np.any(a == 0) or np.any(b == 0):
            raise ValueError("a zero Hessian eigenvalue has no log ratio")
        samples.append(_paired_rows(np.log(a), np.log(b), "Hessian eigenvalues").mean(axis=1))
        ks.add(a.shape[1])
        a_med.append(float(np.median(a[:, 0])))
        b_med.append(float(np.median(b[:, 0])))
    k = "/".join(str(x) for x in sorted(ks))
    return make_claim("MFF §4.3 (Fig. 6)", "MFF's Hessian max eigenvalues are smaller than MAE's",
                      f"mean log(λ MFF / λ MAE) over the top {k} (< 0 = MFF flatter)",
                      f"median top eigenvalue MAE {_listed(a_med, '.3g')}, MFF "
                      f"{_listed(b_med, '.3g')}", samples, direction="less", unit="minibatches",
                      paired=True)


def mff_better_linear_probe(mae_correct, mff_correct, what: str = "linear probe") -> Claim:
    """MFF's headline: +1.8 linear-probe points at 300 epochs (ViT-B). Inputs: per-image
    correctness (0/1) of each model's probe on the same test images, one array per seed."""
    samples, accs = [], []
    for a, b in zip(_seeds(mae_correct, 1), _seeds(mff_correct, 1), strict=True):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        samples.append(_paired_rows(a, b, what))
        accs.append((a.mean(), b.mean()))
    return make_claim("MFF Table 1", f"MFF-MAE features beat MAE's on a {what}",
                      f"MFF − MAE {what} accuracy (points / 100)",
                      "accuracy MAE " + _listed([100 * x for x, _ in accs], ".1f") + " %, MFF "
                      + _listed([100 * y for _, y in accs], ".1f") + " %", samples,
                      direction="greater", unit="images", paired=True)


def mff_converges_faster(mae_histories, mff_histories) -> Claim:
    """MFF: fusing shallow layers speeds up pretraining. Effect per seed: the mean over the steps
    both runs logged (after step 0) of MFF's minus MAE's held-out kNN accuracy (the kNN
    monitor, ``probes.knn_history``): the area between the two curves, per step."""
    gaps, finals = [], []
    for a, b in zip(_seeds(mae_histories), _seeds(mff_histories), strict=True):
        acc_a, acc_b = dict(zip(a.steps, a.accuracy)), dict(zip(b.steps, b.accuracy))
        steps = sorted(s for s in set(acc_a) & set(acc_b) if s > 0)
        if not steps:
            raise ValueError(f"the MAE and MFF-MAE kNN histories share no step after 0 (MAE "
                             f"{a.steps}, MFF {b.steps})")
        gaps.append(float(np.mean([acc_b[s] - acc_a[s] for s in steps])))
        finals.append((acc_a[steps[-1]], acc_b[steps[-1]]))
    return make_claim("MFF §4 (convergence)", "MFF-MAE's features become useful faster during "
                      "pretraining", "MFF − MAE kNN accuracy, mean over logged steps (points / 100)",
                      "final kNN accuracy MAE " + _listed([100 * x for x, _ in finals], ".1f")
                      + " %, MFF " + _listed([100 * y for _, y in finals], ".1f") + " %", gaps,
                      direction="greater", unit="seeds")


def high_mask_ratio_best(ratios, correct) -> Claim:
    """MAE Fig. 5: a high mask ratio (60–90 %) gives the best linear probe. ``correct``: per seed,
    per-image probe correctness [ratios, images] of the model trained at each ratio. Effect per
    image: mean accuracy at ratios in [0.6, 0.9] minus at the lower ratios; the measured text gives
    the peak ratio with a bootstrap interval over images."""
    ratios = np.asarray(ratios, dtype=float)
    high = (ratios >= HIGH_RATIOS[0]) & (ratios <= HIGH_RATIOS[1])
    low = ratios < HIGH_RATIOS[0]
    if not high.any() or not low.any():
        raise ValueError(f"the sweep needs ratios both below {HIGH_RATIOS[0]} and in "
                         f"{list(HIGH_RATIOS)}, got {ratios.tolist()}")
    mats = [np.asarray(c, dtype=float) for c in _seeds(correct, 2)]
    for m in mats:
        if m.ndim != 2 or m.shape[0] != ratios.size:
            raise ValueError(f"correctness must be [ratios={ratios.size}, images], got "
                             f"{list(m.shape)}")
    samples = [m[high].mean(0) - m[low].mean(0) for m in mats]
    curve = np.mean([m.mean(1) for m in mats], axis=0)
    lo, hi = peak_interval(ratios, mats)
    text = ", ".join(f"{r:.2f}: {100 * a:.1f}%" for r, a in zip(ratios, curve))
    return make_claim("MAE §4.1 (Fig. 5)", "a high mask ratio (about 75%) gives the best linear probe",
                      "accuracy at ratios 0.6–0.9 minus at lower ratios", f"accuracy by training "
                      f"mask ratio: {text}; peak {ratios[curve.argmax()]:.2f} (95% bootstrap "
                      f"interval over images {lo:.2f}–{hi:.2f})", samples, direction="greater",
                      unit="images")


def peak_interval(ratios: np.ndarray, mats: list[np.ndarray], level: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the best ratio (argmax of the seed-averaged accuracy
    curve), resampling test images (the same resample for every seed and ratio)."""
    from scipy import stats

    stacked = np.stack(mats)  # [seeds, ratios, images]

    def peak(idx, axis=-1):
        idx = np.asarray(idx, dtype=int)
        curves = stacked[:, :, idx].mean(axis=(0, -1))
        return ratios[np.argmax(curves)]

    res = stats.bootstrap((np.arange(stacked.shape[-1]),), peak, vectorized=False,
                          confidence_level=level, n_resamples=n_resamples, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _listed(values: Sequence[float], fmt: str = "+.3f") -> str:
    """'0.123' for one value, '[0.1, 0.2] (mean 0.15)' for several."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return format(values[0], fmt)
    return "[" + ", ".join(format(v, fmt) for v in values) + f"] (mean {format(np.mean(values), fmt)})"


# ----------------------------------------------------------------------------- the report
def _number(x: float | None) -> str:
    return "–" if _finite_or_none(x) is None else f"{x:.3g}"


def claim_row(c: Claim) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in c.sizes.items())
    ci = f"[{_number(c.ci[0])}, {_number(c.ci[1])}]"
    paper = ">" if c.direction == "greater" else "<"
    verdict = f"**{c.verdict}**" + (f" ({c.note})" if c.note else "")
    return (f"| {c.source} | {c.claim} | {c.effect_name} | {c.measured} | {_number(c.effect)} "
            f"{ci} | {paper} 0 | {_number(c.p)} | {c.test} | {sizes} | {verdict} |")


def findings_markdown(claims: Sequence[Claim], profile: str, description: str) -> str:
    """``findings.md``: the profile and its sizes at the top, a count of verdicts, then one row
    per claim with effect, 95 % interval, the paper's direction, p, test, sizes and verdict."""
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    lines = [f"# Findings: the papers' claims against this run ({profile} profile)", "",
             description, "",
             f"Verdicts: {counts['held']} held, {counts['not held']} not held, "
             f"{counts['inconclusive']} inconclusive. A claim is **held** only when the 95 % "
             "interval of its effect excludes 0 in the paper's direction, **not held** only when "
             "it excludes 0 the other way (`workbench.findings.decide`). p is one-sided in the "
             "paper's direction. Tiny models trained for minutes are far from the papers' "
             "setting: a verdict here says little about the paper at scale.", "",
             "| source | claim | effect | measured | effect [95% CI] | paper | p | test | n | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [claim_row(c) for c in claims]
    return "\n".join(lines) + "\n"


CLAIMS: dict[str, Callable[..., Claim]] = {
    f.__name__: f for f in (fusion_moves_shallow, supervised_fusion_favors_last,
                            shallow_layers_more_high_frequency, mff_last_layer_less_high_frequency,
                            mff_flatter_hessian, mff_better_linear_probe,
                            mff_converges_faster, high_mask_ratio_best)}
