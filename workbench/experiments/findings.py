"""The papers' claims, decided with statistics.

:func:`decide` is the one decision rule for one claim. It returns the effect, a 95 % interval, the
one-sided p-values in the paper's direction (``p``) and the other way (``p_opposite``), the
two-sided ``p_two`` and, given a smallest effect of interest (``sesoi``), the equivalence p. The
verdict is a function of those p's, so it never contradicts them (``level = alpha / 2``):

* ``"held"``: ``p < level`` (the effect goes the paper's way);
* ``"not held"``: ``p_opposite < level`` (it goes the other way);
* ``"no effect"``: neither, and both one-sided tests against ``±sesoi`` reject at ``level``
  (``p_equivalence < level``; for the t-tests: the 95 % interval lies inside ``±sesoi``);
* ``"inconclusive"``: none of these (including ``n < 2`` and samples without spread).

An effect both in the paper's direction and inside ``±sesoi`` is "held" (the paper's direction is
the claim); its note says it is smaller than the smallest effect of interest.

``"not testable"`` is set by the caller (:func:`not_testable`) for a claim the profile cannot
measure. A report holds several claims: :func:`adjust_family` Holm-adjusts their p's and
re-derives the verdicts from the adjusted p's (family-wise error 5 % over the report).

Each claim function takes probe outputs, one per training seed (a single output counts as one
seed), and returns a :class:`Claim`. The unit of the test follows the design:

* two or more seeds: each seed is summarised by its mean over images / minibatches and the seeds
  are the sample (a t-test): the interval covers training randomness;
* one seed: the images or minibatches inside that run are the sample (a permutation test: sign
  flips, and for a one-sample mean also a bootstrap-t, the larger p; its interval by inverting
  the test): the interval covers only which images were drawn, and the claim says so. Claims
  measured once per run (fusion movement) stay inconclusive with one seed.

Notebooks call these on one seed (``make figures``); ``analysis/evidence.py`` on several seeds.
Both write ``claims.json`` and, through :func:`findings_markdown`, ``findings.md``.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from ..core.results import AsDict

DIRECTIONS = ("greater", "less")
VERDICTS = ("held", "not held", "no effect", "inconclusive", "not testable")
TESTS = ("t", "bootstrap", "permutation")  # "bootstrap": the old name of "permutation"
HIGH_RATIOS = (0.6, 0.9)  # MAE Fig. 5: accuracy peaks in this range of mask ratios
NAN = float("nan")


# ----------------------------------------------------------------------------- the decision rule
@dataclass
class Decision(AsDict):
    effect: float  # mean of a; of b - a (paired); difference of means b - a (unpaired)
    ci: list[float]  # two-sided (1 - alpha) interval [low, high]; [nan, nan] when n < 2;
    # [-inf, inf] when the test cannot reject at this n (a permutation test with n <= 5)
    p: float  # one-sided p-value in the paper's direction (nan when n < 2)
    n: int  # sample size of the test (pairs, or both groups together)
    test: str  # the test's name
    verdict: str  # "held" | "not held" | "no effect" | "inconclusive"
    direction: str  # the paper's direction: "greater" (effect > 0) or "less"
    p_opposite: float = NAN  # one-sided p the other way (computed, not 1 - p: see decide)
    p_two: float = NAN  # two-sided: min(1, 2 min(p, p_opposite))
    sesoi: float | None = None  # smallest effect of interest (None: no equivalence test)
    p_equivalence: float = NAN  # max of the two one-sided p's against -sesoi and +sesoi


def _clean(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values ({int((~np.isfinite(a)).sum())} of "
                         f"{a.size}): decide() needs finite numbers")
    return a


def verdict_of(ci: Sequence[float], direction: str) -> str:
    """"held" when the interval excludes 0 in ``direction``, "not held" when it excludes 0 the
    other way, else "inconclusive" -- the reading of an interval alone. :func:`decide` decides
    from p-values (:func:`verdict_from_p`); its intervals agree with this reading."""
    low, high = float(ci[0]), float(ci[1])
    if np.isnan(low) or np.isnan(high):
        return "inconclusive"
    above, below = low > 0, high < 0
    if direction == "greater":
        return "held" if above else "not held" if below else "inconclusive"
    return "held" if below else "not held" if above else "inconclusive"


def verdict_from_p(p: float, p_opposite: float, p_equivalence: float = NAN,
                   level: float = 0.025) -> str:
    """The verdict from one-sided p's (nan: that test was not made): "held" when the paper's
    direction rejects at ``level``, "not held" when the other direction does, "no effect" when
    neither does and the equivalence test rejects, else "inconclusive". A comparison with nan is
    False, so a missing p never decides."""
    if p < level:
        return "held"
    if p_opposite < level:
        return "not held"
    if p_equivalence < level:
        return "no effect"
    return "inconclusive"


class ShiftTest(Protocol):
    """A test of the shift ``effect = mu0`` in either direction, and the interval that inverts
    it (the shifts it does not reject at ``alpha / 2`` on either side)."""

    name: str

    def p(self, mu0: float, alternative: str) -> float: ...

    def interval(self, alpha: float) -> tuple[float, float]: ...


@dataclass
class TTest:
    """Student's t on one sample (a paired design passes the differences) or Welch's t on a
    difference of two means: ``estimate``, its standard error and degrees of freedom, from
    which every one-sided p and the interval follow (the values of
    :func:`scipy.stats.ttest_1samp` / :func:`scipy.stats.ttest_ind`, without their per-call
    overhead: the error-rate simulations call this thousands of times)."""

    estimate: float
    se: float
    df: float
    name: str

    @classmethod
    def one_sample(cls, d: np.ndarray, name: str) -> "TTest":
        return cls(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1.0, name)

    @classmethod
    def welch(cls, a: np.ndarray, b: np.ndarray, name: str) -> "TTest":
        """``mean(b) - mean(a)``, Welch-Satterthwaite degrees of freedom."""
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
        return cls(float(b.mean() - a.mean()), math.sqrt(va + vb), float(df), name)

    def p(self, mu0: float, alternative: str) -> float:
        from scipy import stats

        t = (self.estimate - mu0) / self.se
        tail = stats.t.sf if alternative == "greater" else stats.t.cdf
        return float(tail(t, self.df))

    def interval(self, alpha: float) -> tuple[float, float]:
        from scipy import stats

        half = float(stats.t.ppf(1 - alpha / 2, self.df)) * self.se
        return self.estimate - half, self.estimate + half


@dataclass
class ThresholdTest:
    """A resampling test of the mean shift, as the shifts at which each rearrangement (or
    resample) of the data becomes "as extreme as observed".

    For sign flips of ``d - mu0`` a flip of the set ``S`` gives a statistic at least the
    observed one exactly when ``mean(d[S]) <= mu0``; for relabelling ``(a, b - mu0)``, moving the
    ``b`` items ``O`` out and the ``a`` items ``I`` in does so exactly when
    ``mean(b[O]) - mean(a[I]) <= mu0``. So one sorted array of those ``means`` (and a count of
    rearrangements that change nothing) gives the one-sided p at every ``mu0`` -- the same as
    :func:`scipy.stats.permutation_test` with the mean (difference) as statistic -- and the
    interval inverting them (Hartigan's subset means). A bootstrap-t resample ``b`` with
    studentized mean ``t_b`` is as extreme as observed at ``mu0`` exactly when
    ``mean - se * t_b <= mu0``: the same form. The verdict at 0 and the interval come from the
    same thresholds, so they agree (up to a rounding tolerance ``tol``).
    """

    means: np.ndarray  # sorted: per rearrangement that moves something, its threshold shift
    unchanged: int  # rearrangements that move nothing (extreme at every shift)
    total: int  # rearrangements in the null distribution (+ the observed one when sampled)
    tol: float  # ties within this count as ties (floating-point sums)
    name: str

    def p(self, mu0: float, alternative: str) -> float:
        if alternative == "greater":
            count = np.searchsorted(self.means, mu0 + self.tol, side="right")
        else:
            count = self.means.size - np.searchsorted(self.means, mu0 - self.tol, side="left")
        return (self.unchanged + int(count)) / self.total

    def interval(self, alpha: float) -> tuple[float, float]:
        """The shifts neither one-sided test rejects at ``alpha / 2``: the r-th smallest and r-th
        largest threshold, r the fewest that make ``(unchanged + r) / total >= alpha / 2``
        (infinite when even r = 0 does: too few rearrangements for this level)."""
        r = 0
        while (self.unchanged + r) / self.total < alpha / 2:
            r += 1
        if r == 0:
            return -math.inf, math.inf
        return float(self.means[r - 1]), float(self.means[self.means.size - r])


def _rows(n_rows: int, chunk: int = 1024):
    """Row ranges of at most ``chunk`` rows (the sign or label matrices stay small)."""
    for start in range(0, n_rows, chunk):
        yield start, min(n_rows, start + chunk)


def _subset_means(moved: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, int]:
    """(threshold means of the rows that move something, number of rows that move nothing)."""
    k = moved.sum(axis=1)
    return sums[k > 0] / k[k > 0], int((k == 0).sum())


def sign_flip_test(d: np.ndarray, n_resamples: int, rng: np.random.Generator,
                   name: str) -> ThresholdTest:
    """Sign flips of ``d``: all ``2**n`` when that is at most ``n_resamples`` (exact), else
    ``n_resamples`` random ones plus the observed (p = (1 + count) / (n_resamples + 1))."""
    n = d.size
    exact = 2 ** n <= n_resamples
    n_rows = 2 ** n if exact else n_resamples
    means, unchanged = [], 0 if exact else 1
    for lo, hi in _rows(n_rows):
        if exact:
            flips = ((np.arange(lo, hi)[:, None] >> np.arange(n)) & 1).astype(bool)
        else:
            flips = rng.random((hi - lo, n)) < 0.5
        m, z = _subset_means(flips, flips.astype(float) @ d)
        means.append(m)
        unchanged += z
    return ThresholdTest(np.sort(np.concatenate(means)), unchanged, n_rows + (0 if exact else 1),
                         1e-9 * float(np.abs(d).max()),
                         f"{name} ({'exact, ' if exact else ''}{n_rows} sign flips)")


def relabel_test(a: np.ndarray, b: np.ndarray, n_resamples: int, rng: np.random.Generator,
                 name: str) -> ThresholdTest:
    """Relabellings of the pooled ``(a, b)``: all ``C(n, len(b))`` when that is at most
    ``n_resamples`` (exact), else ``n_resamples`` random ones plus the observed."""
    na, nb = a.size, b.size
    n_all = math.comb(na + nb, nb)
    exact = n_all <= n_resamples
    n_rows = n_all if exact else n_resamples
    combos = itertools.combinations(range(na + nb), nb) if exact else None
    means, unchanged = [], 0 if exact else 1
    for lo, hi in _rows(n_rows):
        if exact:  # row: which pooled items are labelled b
            chosen = np.zeros((hi - lo, na + nb), dtype=bool)
            for i, c in enumerate(itertools.islice(combos, hi - lo)):
                chosen[i, list(c)] = True
        else:
            chosen = np.argsort(rng.random((hi - lo, na + nb)), axis=1) < nb
        a_in, b_out = chosen[:, :na], ~chosen[:, na:]
        m, z = _subset_means(a_in, b_out.astype(float) @ b - a_in.astype(float) @ a)
        means.append(m)
        unchanged += z
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    return ThresholdTest(np.sort(np.concatenate(means)), unchanged, n_rows + (0 if exact else 1),
                         1e-9 * scale,
                         f"{name} ({'exact, ' if exact else ''}{n_rows} relabellings)")


def bootstrap_t_test(d: np.ndarray, n_resamples: int, rng: np.random.Generator,
                     name: str) -> ThresholdTest:
    """The studentized (bootstrap-t) test of the mean of ``d``: ``n_resamples`` resamples with
    replacement, each's ``t_b = (mean_b - mean) / se_b`` (a resample without spread counts as
    ``±inf`` by the sign of ``mean_b - mean``), plus the observed. Second-order accurate for
    skewed data, where the sign-flip test (which assumes symmetry) errs like the t-test."""
    n, mean = d.size, float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    thresholds = []
    for lo, hi in _rows(n_resamples):
        x = d[rng.integers(0, n, size=(hi - lo, n))]
        gap, se_b = x.mean(axis=1) - mean, x.std(axis=1, ddof=1) / math.sqrt(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se_b > 0, gap / np.where(se_b > 0, se_b, 1.0), np.sign(gap) * np.inf)
        thresholds.append(mean - se * t)
    return ThresholdTest(np.sort(np.concatenate(thresholds)), 1, n_resamples + 1,
                         1e-9 * float(np.abs(d).max()), f"{name} ({n_resamples} resamples)")


@dataclass
class LargerP:
    """Several tests of the same shift; each p is the largest of theirs -- valid when any one of
    them is -- and the interval the hull of theirs (it excludes a shift exactly when every one
    of them does, so it agrees with the p's)."""

    tests: list[ShiftTest]
    name: str

    def p(self, mu0: float, alternative: str) -> float:
        return max(t.p(mu0, alternative) for t in self.tests)

    def interval(self, alpha: float) -> tuple[float, float]:
        ends = [t.interval(alpha) for t in self.tests]
        return min(lo for lo, _ in ends), max(hi for _, hi in ends)


def decide(a, b=None, *, paired: bool = False, direction: str = "greater", alpha: float = 0.05,
           test: str = "t", n_resamples: int = 9999, seed: int = 0,
           sesoi: float | None = None) -> Decision:
    """Decide whether the effect goes the paper's way (the rule: the module docstring).

    * ``b is None``: the effect is ``mean(a)`` (``paired=True``: ``a`` holds the differences
      ``b - a`` of pairs, already taken);
    * ``paired=True``: ``mean(b - a)`` over pairs (same seeds, images or minibatches);
    * otherwise the difference of means ``mean(b) - mean(a)`` of two independent groups.

    ``test="t"``: Student's t (one-sample / paired) or Welch's t (unpaired), the choice for a few
    seeds; its interval is the usual t interval, exactly dual to its p's.

    ``test="permutation"`` (``"bootstrap"``, its old name), for images or minibatches: a
    permutation test of the mean -- relabelling for two groups, sign flips for paired
    differences -- exact when every rearrangement fits in ``n_resamples`` (C(n, n_b)
    relabellings, 2^n sign flips), else ``n_resamples`` random ones. For a one-sample mean the
    p is the larger of the sign-flip p and a bootstrap-t p (:func:`bootstrap_t_test`): sign
    flips are exact only for data symmetric under no effect, which paired differences of
    exchangeable pairs are and a one-sample mean need not be. Each interval inverts its own
    test (:class:`ThresholdTest`, :class:`LargerP`), so interval and verdict agree. With n <= 5
    no sign-flip p is below 2.5 % (p >= 1/32): the interval is infinite and the verdict
    inconclusive, by design (the BCa interval this replaces said "held" in 15 % of no-effect
    draws at n = 4).

    Every p is computed, never taken as 1 - another: permutation p's are discrete and both
    tails count the observed arrangement. ``sesoi``: the two one-sided tests of
    ``effect <= -sesoi`` and ``effect >= +sesoi`` (TOST), each at ``alpha / 2``, from the same
    test; ``p_equivalence`` is the larger (below ``alpha / 2`` exactly when the interval lies
    inside ``±sesoi``).

    Error rates of "held" under no effect, per side (``tests/test_findings.py`` simulates them
    for n = 3..32; 2000 draws gave at most 3.4 %, within Monte Carlo error of 2.5 %): at most
    ``alpha / 2`` for normal data in every branch, and for skewed data (centred exponential) in
    the relabelling and paired sign-flip tests. No test of a mean can promise that for every
    skewed distribution at small n (Bahadur and Savage, 1956): on a one-sample centred
    exponential the t-test says "held" on the skewed side in 6-12 % of draws at n = 3..32, sign
    flips alone in 6-9 %, the larger-p test here in 4.5-5.5 % at n = 6..16 and 3-3.7 % at
    n = 25..32. That residual excess is left as it is, not turned into "inconclusive": it
    depends on the data's skewness, not on n, and the claims' one-sample tests on one seed are
    over many images.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if sesoi is not None and not (np.isfinite(sesoi) and sesoi > 0):
        raise ValueError(f"sesoi must be a positive number or None, got {sesoi}")
    a = _clean(a, "a")
    if b is not None:
        b = _clean(b, "b")
        if paired and b.size != a.size:
            raise ValueError(f"paired samples need equal sizes, got {a.size} and {b.size}")
    one = b is None or paired
    d = (a if b is None else b - a) if one else None
    groups = (d,) if one else (b, a)
    effect = float(d.mean()) if one else float(b.mean() - a.mean())
    n = a.size if one else a.size + b.size
    kind = ("paired" if paired else "one-sample") if one else "two-sample"
    if min(g.size for g in groups) < 2 or all(np.ptp(g) == 0 for g in groups):
        # no spread to estimate from: only a constant sample far from 0 would settle it, and a
        # constant sample says nothing about the next one
        name = f"{kind} {'t' if test == 't' else 'permutation'} (n too small or no spread)"
        return Decision(effect, [NAN, NAN], NAN, int(n), name, "inconclusive", direction,
                        sesoi=sesoi)
    shift = _shift_test(d, a, b, kind, test, n_resamples, np.random.default_rng(seed))
    return decision_from(shift, effect, int(n), direction, alpha, sesoi)


def _shift_test(d, a, b, kind: str, test: str, n_resamples: int, rng) -> ShiftTest:
    """The test :func:`decide` uses for this design (``d``: the one sample, else None)."""
    if test == "t":
        return TTest.one_sample(d, f"{kind} t-test") if d is not None else \
            TTest.welch(a, b, "Welch t-test")
    if d is None:
        return relabel_test(a, b, n_resamples, rng, "two-sample relabelling permutation test")
    flips = sign_flip_test(d, n_resamples, rng, f"{kind} sign-flip permutation test")
    if kind == "paired":
        return flips
    boot = bootstrap_t_test(d, n_resamples, rng, "bootstrap-t")
    return LargerP([flips, boot], f"{flips.name} and {boot.name}, the larger p")

def decision_from(shift: ShiftTest, effect: float, n: int, direction: str, alpha: float,
                  sesoi: float | None) -> Decision:
    """The :class:`Decision` of a test: its p's at 0 (and at ±sesoi), its interval, the verdict
    from the p's (:func:`verdict_from_p` at ``alpha / 2``)."""
    other = "less" if direction == "greater" else "greater"
    p, p_opp = shift.p(0.0, direction), shift.p(0.0, other)
    p_eq = NAN if sesoi is None else max(shift.p(-sesoi, "greater"), shift.p(sesoi, "less"))
    lo, hi = shift.interval(alpha)
    verdict = verdict_from_p(p, p_opp, p_eq, alpha / 2)
    return Decision(effect, [lo, hi], p, n, shift.name, verdict, direction, p_opp,
                    min(1.0, 2 * min(p, p_opp)), sesoi, p_eq)


# ----------------------------------------------------------------------------- claims
@dataclass
class Claim(AsDict):
    source: str  # where the paper says it
    claim: str  # the claim as the paper states it
    effect_name: str  # what ``effect`` measures, with the paper's sign
    measured: str  # the numbers behind it, in words
    effect: float
    ci: list[float]
    p: float  # one-sided in the paper's direction
    n: int  # units of the test (seeds, or images / minibatches within one seed)
    sizes: dict[str, int]  # every count behind the claim: seeds, images, minibatches, ...
    test: str
    verdict: str  # one of VERDICTS
    direction: str
    note: str = ""  # what the interval does not cover; why a claim is not testable
    p_opposite: float | None = None  # one-sided the other way
    p_two: float | None = None  # two-sided, min(1, 2 min(p, p_opposite))
    p_adjusted: float | None = None  # p_two Holm-adjusted over the report (adjust_family)
    sesoi: float | None = None  # smallest effect of interest, in the effect's units
    sesoi_reason: str = ""  # why that size
    p_equivalence: float | None = None  # the larger TOST p against ±sesoi
    p_equivalence_adjusted: float | None = None  # Holm-adjusted over the report
    verdict_unadjusted: str = ""  # the claim's own verdict, once adjust_family has set verdict

    @property
    def held(self) -> bool | None:
        return {"held": True, "not held": False}.get(self.verdict)

    def to_dict(self) -> dict:
        """JSON-ready, with a missing interval or p (n too small) as null, not NaN."""
        d = super().to_dict()
        d["ci"] = [_finite_or_none(x) for x in d["ci"]]
        for key in ("p", "effect", *_OPTIONAL_NUMBERS):
            d[key] = _finite_or_none(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        """From :meth:`to_dict` (or an older claims.json without the later fields)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


_OPTIONAL_NUMBERS = ("p_opposite", "p_two", "p_adjusted", "sesoi", "p_equivalence",
                     "p_equivalence_adjusted")


def _finite_or_none(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _nan_if_none(x) -> float:
    return NAN if x is None else float(x)


@dataclass(frozen=True)
class Sesoi:
    """A claim's smallest effect of interest, in its effect's units, and why that size: effects
    inside ``±value`` would not count as the paper's effect."""

    value: float
    reason: str


SESOI_FUSION = Sesoi(0.02, "a tenth of the shift in weighted depth over pretraining in MFF Fig. 1")
SESOI_SUPERVISED = Sesoi(0.01, "0.01 of weight (weights sum to 1): a smaller lead of the last "
                         "layer is no preference")
SESOI_DEPTH_SLOPE = Sesoi(0.1, "0.1 Δ log amplitude per unit of normalised depth: about a 10 % "
                          "amplitude difference between the first and the last block")
SESOI_LAST_LAYER_FREQUENCY = Sesoi(0.05, "0.05 Δ log amplitude: a 5 % amplitude difference at "
                                   "the highest frequency")
SESOI_HESSIAN = Sesoi(math.log(1.1), "log 1.1: a 10 % change in the top eigenvalues")
SESOI_LINEAR_PROBE = Sesoi(0.01, "1 accuracy point, about half of MFF's +1.8 at ViT-B "
                           "(Table 1)")
SESOI_KNN = Sesoi(0.01, "1 kNN-accuracy point, as for the linear probe")
SESOI_MASK_RATIO = Sesoi(0.01, "1 accuracy point between the high and the low mask ratios")
SESOI_PARTIAL_FT = Sesoi(0.01, "1 top-1 point around the midpoint of head-only and full "
                         "fine-tuning: closer than that, one block recovers about half the gap")
SESOI_FEW_SHOT = Sesoi(0.01, "1 top-1 point of change in MFF's lead, as for the linear probe")


def _sesoi(value: float | None, default: Sesoi) -> tuple[float | None, str]:
    """(sesoi, its reason) for a claim function's ``sesoi=`` argument: its default's reason, or
    the caller's choice, or no equivalence test (None)."""
    if value is None:
        return None, ""
    return float(value), default.reason if value == default.value else "set by the caller"


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
                      seed: int = 0, sesoi: float | None = None
                      ) -> tuple[Decision, dict[str, int], str]:
    """Per-seed samples (arrays over ``unit``: images, minibatches; or one number per seed) ->
    (decision, sizes, note). Two or more seeds: a t-test over the seeds' means. One seed: a
    permutation test over its units (the note says what that leaves out). ``paired``: the
    samples are MFF − MAE differences on the same seeds / items (a paired test: sign flips
    alone, exact for exchangeable pairs)."""
    arrays = [np.asarray(s, dtype=float).reshape(-1) for s in samples]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError(f"every seed needs at least one value (got sizes "
                         f"{[a.size for a in arrays]})")
    sizes = {"seeds": len(arrays)}
    within = sum(a.size for a in arrays)
    if within > len(arrays):
        sizes[unit] = within
    kw = dict(direction=direction, paired=paired, sesoi=sesoi)
    if len(arrays) >= 2:
        return decide([a.mean() for a in arrays], test="t", **kw), sizes, ""
    if arrays[0].size == 1:
        return (decide(arrays[0], **kw), sizes,
                "one training seed and one value per seed: needs more seeds")
    return (decide(arrays[0], test="permutation", seed=seed, **kw), sizes,
            ONE_SEED_NOTE.format(unit=unit))


def make_claim(source: str, claim: str, effect_name: str, measured: str, samples: Sequence, *,
               direction: str, unit: str, paired: bool = False, note: str = "",
               sesoi: float | None = None, sesoi_reason: str = "") -> Claim:
    """A :class:`Claim` from per-seed samples (:func:`decide_over_seeds`), with its own verdict;
    :func:`adjust_family` turns a report's claims into family verdicts."""
    d, sizes, why = decide_over_seeds(samples, direction=direction, unit=unit, paired=paired,
                                      sesoi=sesoi)
    small = d.verdict in ("held", "not held") and d.p_equivalence < 0.025
    notes = (note, why, "the interval lies inside ±sesoi: an effect smaller than the smallest "
             "of interest" if small else "")
    return Claim(source, claim, effect_name, measured, d.effect, d.ci, d.p, d.n, sizes, d.test,
                 d.verdict, direction, "; ".join(x for x in notes if x),
                 _finite_or_none(d.p_opposite), _finite_or_none(d.p_two), None, d.sesoi,
                 sesoi_reason if d.sesoi is not None else "", _finite_or_none(d.p_equivalence))


def not_testable(claim: Claim, reason: str) -> Claim:
    """The claim marked "not testable" at this profile (the profile cannot measure it: too few
    seeds, a missing measurement, ...). ``reason`` leads its note; its numbers stay for the
    record, and :func:`adjust_family` leaves it out of the family."""
    if not reason:
        raise ValueError("not_testable needs a reason")
    note = "; ".join(x for x in (reason, claim.note) if x)
    return dataclasses.replace(claim, verdict="not testable", note=note, p_adjusted=None,
                               p_equivalence_adjusted=None)


# ----------------------------------------------------------------------------- the family
def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: with p sorted ascending, the i-th (1-based) times
    ``m - i + 1``, made non-decreasing in that order and capped at 1. Rejecting where the
    adjusted p is below alpha keeps the family-wise error at alpha under any dependence
    between the tests (Holm, 1979)."""
    p = np.asarray(p, dtype=float).reshape(-1)
    if np.isnan(p).any():
        raise ValueError("holm() needs p-values, got nan")
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def _testable(c: Claim) -> bool:
    """In the family: not marked "not testable", and with both one-sided p's (n >= 2)."""
    return c.verdict != "not testable" and all(
        np.isfinite(_nan_if_none(x)) for x in (c.p, c.p_opposite, c.p_two))


def adjust_family(claims: Sequence[Claim], alpha: float = 0.05) -> list[Claim]:
    """The claims of one report as one family, with Holm's correction (:func:`holm`).

    The family is the testable claims (:func:`_testable`: "not testable" ones, and those
    without p's, are left out and keep their verdict). Each gets ``p_adjusted`` = its two-sided
    ``p_two`` Holm-adjusted over the family, and its verdict re-derived from it: "held" when
    ``p_adjusted < alpha`` and the evidence goes the paper's way (``p < p_opposite``), "not
    held" when ``p_adjusted < alpha`` the other way, "no effect" when neither and the claim's
    equivalence p, Holm-adjusted over the family's claims with a sesoi
    (``p_equivalence_adjusted``), is below ``alpha / 2`` -- adjusted too, since "no effect" is
    as much a finding as "held" -- else "inconclusive". With a family of one this is the
    claim's own verdict (``verdict_unadjusted``). Held after adjustment implies held before.
    The result depends only on the p's, so adjusting again changes nothing. Returns new claims.
    """
    family = [i for i, c in enumerate(claims) if _testable(c)]
    adjusted = dict(zip(family, holm([claims[i].p_two for i in family])))
    with_sesoi = [i for i in family if np.isfinite(_nan_if_none(claims[i].p_equivalence))]
    adjusted_eq = dict(zip(with_sesoi, holm([claims[i].p_equivalence for i in with_sesoi])))
    out = []
    for i, c in enumerate(claims):
        if i not in adjusted:
            out.append(dataclasses.replace(c, p_adjusted=None, p_equivalence_adjusted=None))
            continue
        p_adj, p_eq = float(adjusted[i]), adjusted_eq.get(i)
        p_eq = None if p_eq is None else float(p_eq)
        if p_adj < alpha:
            verdict = "held" if c.p < c.p_opposite else "not held"
        else:
            verdict = "no effect" if p_eq is not None and p_eq < alpha / 2 else "inconclusive"
        own = verdict_from_p(c.p, c.p_opposite, _nan_if_none(c.p_equivalence), alpha / 2)
        out.append(dataclasses.replace(c, verdict=verdict, p_adjusted=p_adj,
                                       p_equivalence_adjusted=p_eq, verdict_unadjusted=own))
    return out


# ----------------------------------------------------------------------------- the claim functions
def _depth_shifts(histories) -> tuple[list[float], str]:
    """Per seed, the weighted depth at the last logged step minus at the first; and a note when
    the first logged step is not the initialisation."""
    shifts, starts = [], []
    for h in _seeds(histories):
        depth = h.weighted_depth()  # probes.FusionHistory
        shifts.append(float(depth[-1] - depth[0]))
        starts.append(int(h.steps[0]))
    note = "" if all(s == 0 for s in starts) else \
        f"first logged step {max(starts)} is not the initialisation (run predates step-0 logs)"
    return shifts, note


def attainable_depth_shift(layers: Sequence[int], lr_sum: float) -> float:
    """The largest decrease of the fusion's weighted depth (``FusionHistory.weighted_depth``) that the
    fusion logits can reach when they start equal and each moves by at most ``lr_sum`` (AdamW
    moves a parameter by at most about lr per step, so by at most the sum of the lr's).

    The depth is ``D = sum_i w_i x_i`` with ``w = softmax(z)``, ``|z_i| <= B``. Since
    ``dD/dz_i = w_i (x_i - D)``, at the minimum every logit sits at a bound: ``+B`` on the
    layers shallower than the optimal D, ``-B`` on the deeper ones. So the minimum is over
    thresholds: the k shallowest layers at ``+B``, the rest at ``-B``, k = 1..L-1."""
    x = np.sort(np.asarray(layers, dtype=float) / max(1.0, float(max(layers))))
    if lr_sum < 0:
        raise ValueError(f"lr_sum must be >= 0, got {lr_sum}")
    start = float(x.mean())
    ratio = math.exp(-2 * lr_sum)  # weight of a layer at -B over one at +B
    depths = [(x[:k].sum() + ratio * x[k:].sum()) / (k + ratio * (x.size - k))
              for k in range(1, x.size)]
    return max(0.0, start - min(depths, default=start))


def fusion_moves_shallow(histories, *, sesoi: float | None = SESOI_FUSION.value) -> Claim:
    """MFF finding 1: during pretraining the fusion weights move toward shallow layers. Effect per
    seed: weighted mean depth of the fused layers at the end minus at initialisation (step 0)."""
    shifts, note = _depth_shifts(histories)
    value, reason = _sesoi(sesoi, SESOI_FUSION)
    return make_claim("MFF §3 (Fig. 1)", "during pretraining the fusion weights move toward "
                      "shallow layers", "Δ weighted depth of the fusion (end − init; < 0 = shallower)",
                      "per-seed Δ depth " + _listed(shifts), shifts, direction="less",
                      unit="seeds", note=note, sesoi=value, sesoi_reason=reason)


def fusion_moves_shallow_vs_supervised(mff_histories, supervised_histories, attainable=None, *,
                                       sesoi: float | None = SESOI_FUSION.value) -> Claim:
    """MFF finding 1 against a contrast: the fusion moves shallower under MFF pretraining than
    the same fusion does under a supervised objective. Effect per seed: MFF's Δ weighted depth
    (end − init, as :func:`fusion_moves_shallow`) minus the supervised run's, paired on the
    seed. ``attainable``: per seed (or one number for all), the largest depth decrease the
    logits could reach in the run (:func:`attainable_depth_shift`); the measured text then
    gives the effect as a fraction of it."""
    mff, note_mff = _depth_shifts(mff_histories)
    sup, note_sup = _depth_shifts(supervised_histories)
    if len(mff) != len(sup):
        raise ValueError(f"one supervised run per MFF seed, got {len(mff)} MFF and {len(sup)} "
                         f"supervised histories")
    contrast = [m - s for m, s in zip(mff, sup)]
    measured = f"per-seed Δ depth MFF {_listed(mff)}, supervised {_listed(sup)}"
    if attainable is not None:
        bound = np.broadcast_to(np.asarray(attainable, dtype=float), (len(contrast),))
        if np.any(bound <= 0):
            raise ValueError(f"attainable depth shifts must be > 0, got {bound.tolist()}")
        measured += ("; MFF − supervised as a fraction of the attainable decrease "
                     + _listed(np.asarray(contrast) / bound, "+.2f"))
    value, reason = _sesoi(sesoi, SESOI_FUSION)
    notes = "; ".join(dict.fromkeys(x for x in (note_mff, note_sup) if x))
    return make_claim("MFF §3 (Fig. 1, supervised contrast)", "the fusion weights move further "
                      "toward shallow layers under MFF pretraining than under a supervised "
                      "objective", "MFF − supervised Δ weighted depth (< 0 = MFF shallower)",
                      measured, contrast, direction="less", unit="seeds", paired=True,
                      note=notes, sesoi=value, sesoi_reason=reason)


def supervised_fusion_favors_last(histories, *,
                                  sesoi: float | None = SESOI_SUPERVISED.value) -> Claim:
    """MFF finding 4: a supervised ViT with the same fusion puts most weight on the last layer.
    Effect per seed: final last-layer weight minus the largest other weight."""
    margins, last = [], []
    for h in _seeds(histories):
        w = np.asarray(h.weights, dtype=float)[-1]
        margins.append(w[-1] - w[:-1].max())
        last.append(w[-1])
    value, reason = _sesoi(sesoi, SESOI_SUPERVISED)
    return make_claim("MFF §3 (supervised ViT)", "with a supervised objective the same fusion puts "
                      "most weight on the last layer", "final last-layer weight − largest other "
                      "weight", f"final last-layer weight {_listed(last)} (uniform "
                      f"{1 / len(w):.3f})", margins, direction="greater", unit="seeds",
                      sesoi=value, sesoi_reason=reason)


def _high_frequency_rows(r) -> np.ndarray:
    """[images, layers] value at the highest frequency: per image when the response kept them,
    else one row (the response's mean over images)."""
    per_image = r.image_high_frequency
    return np.asarray(per_image if per_image is not None else r.high_frequency[None], dtype=float)


def depth_slope(values: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Least-squares slope over depth of [..., L] values (one slope per leading index)."""
    x = depth - depth.mean()
    return (values - values.mean(-1, keepdims=True)) @ x / (x @ x)


def shallow_layers_more_high_frequency(name: str, responses, *,
                                       sesoi: float | None = SESOI_DEPTH_SLOPE.value) -> Claim:
    """MFF finding 2 / Park & Kim: shallow layers carry more high frequency -- the Δ log amplitude
    at the highest frequency falls with depth. Effect: its least-squares slope over normalised
    depth (per image when the response has per-image curves, else per seed)."""
    samples, firsts, lasts = [], [], []
    for r in _seeds(responses):
        rows = r.block_rows
        depth = np.asarray(r.depth, dtype=float)[rows]
        samples.append(depth_slope(_high_frequency_rows(r)[:, rows], depth))
        firsts.append(float(r.high_frequency[rows[0]]))
        lasts.append(float(r.high_frequency[rows[-1]]))
    value, reason = _sesoi(sesoi, SESOI_DEPTH_SLOPE)
    return make_claim("MFF §3 (Fig. 2)", f"{name}: shallow layers carry more high-frequency signal",
                      "slope of Δ log amplitude at the highest frequency over depth (< 0 = "
                      "shallow layers higher)", f"first block {_listed(firsts, '+.3f')}, last "
                      f"block {_listed(lasts, '+.3f')}", samples, direction="less", unit="images",
                      sesoi=value, sesoi_reason=reason)


def _paired_rows(mae_values: np.ndarray, mff_values: np.ndarray, what: str) -> np.ndarray:
    if mae_values.shape != mff_values.shape:
        raise ValueError(f"{what}: MAE and MFF must be measured on the same items (shapes "
                         f"{list(mae_values.shape)} and {list(mff_values.shape)})")
    return mff_values - mae_values


def mff_last_layer_less_high_frequency(mae, mff, *, sesoi: float | None =
                                       SESOI_LAST_LAYER_FREQUENCY.value) -> Claim:
    """MFF finding 2: MFF's last layer carries less high frequency than MAE's. Effect: MFF − MAE
    Δ log amplitude at the highest frequency of the last block, paired on the same images."""
    samples, a_means, b_means = [], [], []
    for ra, rb in zip(_seeds(mae), _seeds(mff), strict=True):
        a = _high_frequency_rows(ra)[:, ra.last_block_row]
        b = _high_frequency_rows(rb)[:, rb.last_block_row]
        samples.append(_paired_rows(a, b, "last-layer frequency"))
        a_means.append(a.mean())
        b_means.append(b.mean())
    value, reason = _sesoi(sesoi, SESOI_LAST_LAYER_FREQUENCY)
    return make_claim("MFF §4.3 (Fig. 5)", "MFF's last layer carries less high frequency than MAE's",
                      "MFF − MAE Δ log amplitude at the highest frequency, last block",
                      f"MAE {_listed(a_means, '+.3f')}, MFF {_listed(b_means, '+.3f')}", samples,
                      direction="less", unit="images", paired=True, sesoi=value,
                      sesoi_reason=reason)


def mff_flatter_hessian(mae_eigs, mff_eigs, *,
                        sesoi: float | None = SESOI_HESSIAN.value) -> Claim:
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
    value, reason = _sesoi(sesoi, SESOI_HESSIAN)
    return make_claim("MFF §4.3 (Fig. 6)", "MFF's Hessian max eigenvalues are smaller than MAE's",
                      f"mean log(λ MFF / λ MAE) over the top {k} (< 0 = MFF flatter)",
                      f"median top eigenvalue MAE {_listed(a_med, '.3g')}, MFF "
                      f"{_listed(b_med, '.3g')}", samples, direction="less", unit="minibatches",
                      paired=True, sesoi=value, sesoi_reason=reason)


def mff_better_linear_probe(mae_correct, mff_correct, what: str = "linear probe", *,
                            sesoi: float | None = SESOI_LINEAR_PROBE.value) -> Claim:
    """MFF's headline: +1.8 linear-probe points at 300 epochs (ViT-B). Inputs: per-image
    correctness (0/1) of each model's probe on the same test images, one array per seed."""
    samples, accs = [], []
    for a, b in zip(_seeds(mae_correct, 1), _seeds(mff_correct, 1), strict=True):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        samples.append(_paired_rows(a, b, what))
        accs.append((a.mean(), b.mean()))
    value, reason = _sesoi(sesoi, SESOI_LINEAR_PROBE)
    return make_claim("MFF Table 1", f"MFF-MAE features beat MAE's on a {what}",
                      f"MFF − MAE {what} accuracy (points / 100)",
                      "accuracy MAE " + _listed([100 * x for x, _ in accs], ".1f") + " %, MFF "
                      + _listed([100 * y for _, y in accs], ".1f") + " %", samples,
                      direction="greater", unit="images", paired=True, sesoi=value,
                      sesoi_reason=reason)


def mff_converges_faster(mae_histories, mff_histories, *,
                         sesoi: float | None = SESOI_KNN.value) -> Claim:
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
    value, reason = _sesoi(sesoi, SESOI_KNN)
    return make_claim("MFF §4 (convergence)", "MFF-MAE's features become useful faster during "
                      "pretraining", "MFF − MAE kNN accuracy, mean over logged steps (points / 100)",
                      "final kNN accuracy MAE " + _listed([100 * x for x, _ in finals], ".1f")
                      + " %, MFF " + _listed([100 * y for _, y in finals], ".1f") + " %", gaps,
                      direction="greater", unit="seeds", paired=True, sesoi=value,
                      sesoi_reason=reason)


def high_mask_ratio_best(ratios, correct, *,
                         sesoi: float | None = SESOI_MASK_RATIO.value) -> Claim:
    """MAE Fig. 5: a high mask ratio (60–90 %) gives the best linear probe. ``correct``: per seed,
    per-image probe correctness [ratios, images] of the model trained at each ratio. Effect per
    image: mean accuracy at ratios in [0.6, 0.9] minus at the lower ratios; the measured text gives
    the peak ratio with a bootstrap interval (:func:`peak_interval`)."""
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
    over = "seeds and images" if len(mats) >= 2 else "images"
    value, reason = _sesoi(sesoi, SESOI_MASK_RATIO)
    text = ", ".join(f"{r:.2f}: {100 * a:.1f}%" for r, a in zip(ratios, curve))
    return make_claim("MAE §4.1 (Fig. 5)", "a high mask ratio (about 75%) gives the best linear probe",
                      "accuracy at ratios 0.6–0.9 minus at lower ratios", f"accuracy by training "
                      f"mask ratio: {text}; peak {ratios[curve.argmax()]:.2f} (95% bootstrap "
                      f"interval over {over} {lo:.2f}–{hi:.2f})", samples, direction="greater",
                      unit="images", sesoi=value, sesoi_reason=reason)


def peak_interval(ratios: np.ndarray, mats: list[np.ndarray], level: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the best ratio (argmax of the seed-averaged accuracy
    curve). ``mats``: per seed, correctness [ratios, images]. One seed: resampling its test
    images (the same resample for every ratio). Two or more: a two-stage bootstrap, resampling
    the seeds with replacement and then, within each drawn seed, its images -- so the interval
    widens when the seeds disagree about the peak, which resampling images alone hides."""
    ratios = np.asarray(ratios, dtype=float)
    if len(mats) < 2:
        return _image_peak_interval(ratios, mats, level, n_resamples, seed)
    rng = np.random.default_rng(seed)
    peaks = np.empty(n_resamples)
    for r in range(n_resamples):
        drawn = [mats[s] for s in rng.integers(0, len(mats), size=len(mats))]
        curve = np.mean([m[:, rng.integers(0, m.shape[1], size=m.shape[1])].mean(axis=1)
                         for m in drawn], axis=0)
        peaks[r] = ratios[np.argmax(curve)]
    lo, hi = np.percentile(peaks, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _image_peak_interval(ratios: np.ndarray, mats: list[np.ndarray], level: float,
                         n_resamples: int, seed: int) -> tuple[float, float]:
    """The peak's percentile bootstrap interval resampling test images only (the same resample
    for every seed and ratio): :func:`peak_interval` with one seed."""
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


@dataclass(frozen=True)
class ClaimText:
    """What a claim says, without numbers: the row of a claim whose measurement was not made
    (:func:`not_measured`)."""

    source: str
    claim: str
    effect_name: str
    direction: str


def not_measured(text: ClaimText, reason: str) -> Claim:
    """The claim ``text`` as "not testable", with no numbers: its measurement was not made here
    (e.g. a report rebuilt from job files older than the measurement)."""
    empty = Claim(text.source, text.claim, text.effect_name, "not measured", NAN, [NAN, NAN],
                  NAN, 0, {}, "–", "inconclusive", text.direction)
    return not_testable(empty, reason)


def _correct_rows(*per_seed) -> list[tuple[np.ndarray, ...]]:
    """Per seed, the runs' per-image correctness (0/1) as float arrays of one shape (the same
    held-out images); each input is one array or a list of them, one per seed."""
    rows = []
    for runs in zip(*(_seeds(x, 1) for x in per_seed), strict=True):
        runs = tuple(np.asarray(r, dtype=float) for r in runs)
        if len({r.shape for r in runs}) != 1:
            raise ValueError(f"the runs must be evaluated on the same held-out images (shapes "
                             f"{[list(r.shape) for r in runs]})")
        rows.append(runs)
    return rows


def _percent(values) -> str:
    return _listed([100 * v for v in values], ".1f") + " %"


def partial_ft_text(name: str = "MAE") -> ClaimText:
    return ClaimText("MAE §4.3 (Fig. 9)", f"{name}: fine-tuning the last block alone recovers "
                     "most of the gap between head-only and full fine-tuning", "top-1 with the "
                     "last block tuned − midpoint of head-only and full (> 0: over half the gap)",
                     "greater")


def partial_ft_one_block_recovers_gap(head_only, one_block, all_blocks, name: str = "MAE", *,
                                      sesoi: float | None = SESOI_PARTIAL_FT.value) -> Claim:
    """MAE Fig. 9 (partial fine-tuning; ViT-L: 73.5 % with the features frozen, 81.0 % with one
    block tuned): one block recovers most of the gap between head-only (k = 0) and full
    fine-tuning. Inputs: per-image top-1 correctness (0/1) of the three runs on the same held-out
    images, one array per seed. Effect per image: ``one_block - (head_only + all_blocks) / 2``;
    its mean, acc(1) − (acc(0) + acc(all)) / 2, is above 0 exactly when the share of the gap
    recovered, (acc(1) − acc(0)) / (acc(all) − acc(0)), is above one half (the gap positive).
    The share, a ratio of means, is in the measured text; its linear form is a mean over images
    (one seed) or seeds, which the tests take. Without a positive gap (over the seeds) there is
    nothing to recover: "not testable"."""
    rows = _correct_rows(head_only, one_block, all_blocks)
    samples = [k1 - (k0 + kall) / 2 for k0, k1, kall in rows]
    acc = np.asarray([[r.mean() for r in runs] for runs in rows])  # [seeds, (k0, k1, all)]
    a0, a1, a_all = acc.mean(axis=0)
    share = (a1 - a0) / (a_all - a0) if a_all != a0 else NAN
    value, reason = _sesoi(sesoi, SESOI_PARTIAL_FT)
    text = partial_ft_text(name)
    claim = make_claim(text.source, text.claim, text.effect_name,
                       f"top-1 head only {_percent(acc[:, 0])}, last block {_percent(acc[:, 1])}, "
                       f"all blocks {_percent(acc[:, 2])}; share of the gap recovered "
                       f"{share:.2f}", samples, direction=text.direction, unit="images",
                       sesoi=value, sesoi_reason=reason)
    if not a_all > a0:
        return not_testable(claim, f"full fine-tuning does not beat head-only here "
                                   f"({100 * a_all:.1f} % vs {100 * a0:.1f} %): no gap to recover")
    return claim


FEW_SHOT_TEXT = ClaimText("MFF few-shot fine-tuning (1 % / 10 % of the labels)",
                          "MFF-MAE's fine-tuning lead over MAE grows as labels shrink",
                          "(MFF − MAE top-1) with few labels − with all labels", "greater")


def mff_advantage_grows_as_labels_shrink(mae_few, mff_few, mae_all, mff_all,
                                         fraction: float | None = None, *,
                                         sesoi: float | None = SESOI_FEW_SHOT.value) -> Claim:
    """MFF's few-shot table: MFF-MAE's fine-tuning lead over MAE is larger with a small share of
    the labels (MFF: 1 % and 10 % of ImageNet's) than with all of them. Inputs: per-image top-1
    correctness (0/1) of the four runs -- each model fine-tuned on ``fraction`` of the labels
    (few) and on all -- on the same held-out images, one array per seed. Effect per image:
    (MFF − MAE with few labels) − (MFF − MAE with all), a paired difference (swapping the two
    models on an image flips its sign, so it is tested as :func:`mff_better_linear_probe`'s)."""
    rows = _correct_rows(mae_few, mff_few, mae_all, mff_all)
    samples = [(b_few - a_few) - (b_all - a_all) for a_few, b_few, a_all, b_all in rows]
    acc = np.asarray([[r.mean() for r in runs] for runs in rows])  # [seeds, 4]
    few = "few labels" if fraction is None else f"{100 * fraction:g} % of the labels"
    value, reason = _sesoi(sesoi, SESOI_FEW_SHOT)
    t = FEW_SHOT_TEXT
    return make_claim(t.source, t.claim, t.effect_name,
                      f"top-1 with {few}: MAE {_percent(acc[:, 0])}, MFF {_percent(acc[:, 1])}; "
                      f"with all: MAE {_percent(acc[:, 2])}, MFF {_percent(acc[:, 3])}", samples,
                      direction=t.direction, unit="images", paired=True, sesoi=value,
                      sesoi_reason=reason)


# ----------------------------------------------------------------------------- the report
def _number(x: float | None) -> str:
    return "–" if _finite_or_none(x) is None else f"{x:.3g}"


def _sesoi_cell(c: Claim) -> str:
    """'±0.02 (equivalence p 0.003, Holm 0.01)', or '–' without a sesoi."""
    if c.sesoi is None:
        return "–"
    ps = [f"equivalence p {_number(c.p_equivalence)}"] if c.p_equivalence is not None else []
    ps += [f"Holm {_number(c.p_equivalence_adjusted)}"] if c.p_equivalence_adjusted is not None \
        else []
    return f"±{c.sesoi:.3g}" + (f" ({', '.join(ps)})" if ps else "")


def claim_row(c: Claim) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in c.sizes.items())
    ci = f"[{_number(c.ci[0])}, {_number(c.ci[1])}]"
    paper = ">" if c.direction == "greater" else "<"
    before = c.verdict_unadjusted and c.verdict_unadjusted != c.verdict
    said = "; ".join(x for x in (f"{c.verdict_unadjusted} before Holm" if before else "",
                                  c.note) if x)
    verdict = f"**{c.verdict}**" + (f" ({said})" if said else "")
    return (f"| {c.source} | {c.claim} | {c.effect_name} | {c.measured} | {_number(c.effect)} "
            f"{ci} | {paper} 0 | {_sesoi_cell(c)} | {_number(c.p)} | {_number(c.p_adjusted)} | "
            f"{c.test} | {sizes} | {verdict} |")


def rules_text(family: int) -> str:
    """The verdict rules, for the top of ``findings.md``; ``family``: the claims Holm's
    correction ran over (0: the claims were not adjusted)."""
    holm_text = (f"Holm's correction runs over the {family} testable claims of this report: "
                 "**p Holm** is the two-sided p adjusted so that the chance of any false "
                 "**held** / **not held** in the report is at most 5 %." if family else
                 "These claims were not adjusted for multiplicity (p Holm –).")
    return (f"{holm_text} A claim is **held** when p Holm is below 0.05 and the effect goes the "
            "paper's way, **not held** when p Holm is below 0.05 the other way. **no effect**: "
            "neither, and the two one-sided tests against ±sesoi (the smallest effect of "
            "interest, its reason under the table) both reject -- the larger of their p's, "
            "Holm-adjusted over the claims with a sesoi, below 0.025 (before adjustment: the "
            "95 % interval lies inside ±sesoi). **inconclusive**: none of these. **not "
            "testable**: this profile cannot measure the claim (the note says why); it is left "
            "out of the family. The intervals are each claim's own 95 % interval, not adjusted "
            "(an interval that excludes 0 while p Holm is 0.05 or more shows as \"held before "
            "Holm\"). p is one-sided in the paper's direction; with one training seed "
            "the test is a permutation test over images or minibatches, with several a t-test "
            "over seeds (`workbench.experiments.findings.decide`, `adjust_family`). Tiny models trained for "
            "minutes are far from the papers' setting: a verdict here says little about the "
            "paper at scale.")


def findings_markdown(claims: Sequence[Claim], profile: str, description: str) -> str:
    """``findings.md``: the profile and its sizes at the top, a count of verdicts and the rules,
    then one row per claim with effect, 95 % interval, the paper's direction, sesoi, p, Holm's
    p, test, sizes and verdict, and under the table each sesoi's reason. The claims are shown
    as given: :func:`adjust_family` them first for the family verdicts."""
    counts = ", ".join(f"{sum(c.verdict == v for c in claims)} {v}" for v in VERDICTS)
    family = sum(c.p_adjusted is not None for c in claims)
    lines = [f"# Findings: the papers' claims against this run ({profile} profile)", "",
             description, "", f"Verdicts: {counts}. {rules_text(family)}", "",
             "| source | claim | effect | measured | effect [95% CI] | paper | sesoi | p | "
             "p Holm | test | n | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [claim_row(c) for c in claims]
    reasons = [f"- {c.claim}: ±{c.sesoi:.3g}, {c.sesoi_reason}" for c in claims
               if c.sesoi is not None and c.sesoi_reason]
    if reasons:
        lines += ["", "Smallest effects of interest (sesoi):", ""] + reasons
    return "\n".join(lines) + "\n"


CLAIMS: dict[str, Callable[..., Claim]] = {
    f.__name__: f for f in (fusion_moves_shallow, fusion_moves_shallow_vs_supervised,
                            supervised_fusion_favors_last, shallow_layers_more_high_frequency,
                            mff_last_layer_less_high_frequency, mff_flatter_hessian,
                            mff_better_linear_probe, mff_converges_faster, high_mask_ratio_best,
                            partial_ft_one_block_recovers_gap,
                            mff_advantage_grows_as_labels_shrink)}
