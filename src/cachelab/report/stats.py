"""Verdicts from trials: a ratio, its confidence interval, a p-value, and a call.

A report decides something only if the same commit, measured twice, compares
as "no change". Fixed noise bands (±20 % for throughput, ±40 % for p99) fail
that test both ways: on a shared machine a 25 % drift passes them, and a
real five-fold rise in database reads (hit ratio 0.99 → 0.95) hides inside
them. So every comparison here is built from the measured spread:

* **Timed metrics** (latencies, throughput, ratios to the PING floor) are
  samples from repeated trials. Two independent sets (two runs) are compared
  with Welch's t-test on log values; two interleaved sets (A and B measured
  alternately in one run) with a paired t-test on the log ratio of each pair.
  The estimate is the ratio of geometric means and the interval is the t
  interval, exponentiated, so "significant" and "the interval excludes 1"
  always agree. Why t and not a rank test: with 4–8 trials a side,
  Mann–Whitney's smallest two-sided p-value (0.008 for 5 vs 5) cannot pass a
  false-discovery control over a hundred metrics, so a real 3× regression
  would never be called; log-times of whole trials are close to normal, and
  an outlier trial widens the interval rather than narrowing it.
* **Proportions** (miss ratios: a hit ratio of 0.99 → 0.95 is five times the
  database reads, not "4 %") are compared as a relative risk with the Katz
  log interval, widened by the over-dispersion measured between trials
  (misses arrive in bursts, so trials vary more than a binomial would).
* **A call** needs both: significance after Benjamini–Hochberg control of the
  false discovery rate over every compared metric (:func:`control_fdr`), and
  an effect at least as large as the minimum worth calling. The minimum is a
  policy, not a measurement: small for A and B interleaved in one run (the
  machine's drift hits both), larger between separate runs, whose trials
  cannot see the drift between them.

Exact metrics (round trips, commands, bytes, statements, memory per object)
need no statistics: any change is a change (:func:`compare_exact`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

#: Significance level for the false discovery rate (Benjamini–Hochberg).
ALPHA = 0.05
#: Confidence level of every reported interval.
CONFIDENCE = 0.95
#: Smallest relative change called between two separate runs (whole-run drift on a shared machine).
MIN_EFFECT_SEPARATE_RUNS = 0.25
#: Smallest relative change called between A and B interleaved in one run.
MIN_EFFECT_INTERLEAVED = 0.05
#: Between separate runs, for the metrics that are absolute times on a shared CPU and cannot be
#: divided by a floor of their own trial: server µs per operation (INFO commandstats books whole
#: microseconds per call, so a sub-µs operation's figure is the odds of crossing a clock tick) and
#: p99 latency of short load trials. Trials of one run share its machine state, so their spread
#: cannot see the drift between runs: between four quiet runs of one commit these moved ×1.25 at
#: the 90th percentile (ratios to the PING floor: ×1.16), and a run beside one busy core moved
#: them 20–50 % — called "improvements" of an unchanged commit at the 25 % minimum.
MIN_EFFECT_SEPARATE_RUNS_ABSOLUTE = 0.5
#: Metric-name suffixes held to :data:`MIN_EFFECT_SEPARATE_RUNS_ABSOLUTE` between separate runs.
ABSOLUTE_TIME_SUFFIXES = (".server_usec", ".p99_ms")


def min_effect_for(name: str, *, paired: bool) -> float:
    """The smallest change worth calling for metric ``name``: interleaved sides share the machine's
    drift; separate runs do not, and absolute times on a shared CPU drift the most."""
    if paired:
        return MIN_EFFECT_INTERLEAVED
    if name.endswith(ABSOLUTE_TIME_SUFFIXES):
        return MIN_EFFECT_SEPARATE_RUNS_ABSOLUTE
    return MIN_EFFECT_SEPARATE_RUNS

REGRESSION = "regression"
IMPROVEMENT = "improvement"
CHANGED = "changed"  # a real change in a metric with no better direction
NO_CHANGE = "no change"
NOT_COMPARED = "not compared"


@dataclass(frozen=True)
class Comparison:
    """B against A: ``ratio`` is B / A (1.10 = B is 10 % higher)."""

    ratio: float
    low: float
    high: float
    p_value: float
    n_a: int
    n_b: int
    method: str
    q_value: float | None = None
    verdict: str = NOT_COMPARED
    why: str = ""

    @property
    def change(self) -> float:
        """The relative change, e.g. +0.12 for +12 %."""
        return self.ratio - 1.0


def beyond(ratio: float, min_effect: float) -> bool:
    """Is the ratio at least ``min_effect`` away from 1, on a log scale (so ×1.25 and ×0.8 both count)?"""
    if not math.isfinite(ratio):
        return ratio == math.inf
    if ratio <= 0:
        return True
    return abs(math.log(ratio)) >= math.log1p(min_effect) - 1e-12


def _direction(ratio: float, better: str) -> str:
    if better not in ("lower", "higher"):
        return CHANGED
    worse = ratio > 1 if better == "lower" else ratio < 1
    return REGRESSION if worse else IMPROVEMENT


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def _degenerate(a: np.ndarray, b: np.ndarray, method: str) -> Comparison | None:
    """Zero spread on both sides: the t statistic is undefined, but the answer is not."""
    if np.ptp(np.log(a)) < 1e-12 and np.ptp(np.log(b)) < 1e-12:
        ratio = float(b[0] / a[0]) if a[0] != 0 else (1.0 if b[0] == 0 else math.inf)
        p = 1.0 if ratio == 1.0 else 0.0
        return Comparison(ratio, ratio, ratio, p, len(a), len(b), f"{method} (no spread)")
    return None


def compare_trials(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """Two independent sets of trials (two runs): Welch's t-test on log values.

    None when either side has fewer than two trials (nothing to estimate a
    spread from). Non-positive values fall back to Mann–Whitney with the
    ratio of medians (no log scale exists for them).
    """
    xa, xb = _clean(a), _clean(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    if (xa <= 0).any() or (xb <= 0).any():
        return _rank_comparison(xa, xb)
    la, lb = np.log(xa), np.log(xb)
    if (flat := _degenerate(xa, xb, "Welch t on log values")) is not None:
        return flat
    with _quiet_precision():
        result = stats.ttest_ind(lb, la, equal_var=False)
    return _from_log_t(result, float(lb.mean() - la.mean()), len(xa), len(xb), "Welch t on log values")


def compare_paired(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """Interleaved trials of A and B from one run, pair by pair: a paired t-test on log ratios.

    Pairing removes what the two sides of a pair share (the machine's state at
    that moment), which is why interleaving can call smaller changes.
    """
    pairs = [(float(x), float(y)) for x, y in zip(a, b, strict=False) if x is not None and y is not None]
    xa = np.asarray([p[0] for p in pairs])
    xb = np.asarray([p[1] for p in pairs])
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    if len(xa) < 2:
        return None
    if (xa <= 0).any() or (xb <= 0).any():
        return _rank_comparison(xa, xb, paired=True)
    log_ratios = np.log(xb) - np.log(xa)
    if np.ptp(log_ratios) < 1e-12:  # identical up to rounding: no spread to test against
        ratio = math.exp(float(log_ratios[0]))
        return Comparison(
            ratio,
            ratio,
            ratio,
            1.0 if ratio == 1.0 else 0.0,
            len(xa),
            len(xb),
            "paired t on log ratios (no spread)",
        )
    with _quiet_precision():
        result = stats.ttest_1samp(log_ratios, 0.0)
    return _from_log_t(result, float(log_ratios.mean()), len(xa), len(xb), "paired t on log ratios")


def _from_log_t(result: Any, log_ratio: float, n_a: int, n_b: int, method: str) -> Comparison:
    """A t-test on log values as a ratio: the estimate and the interval exponentiated, so they agree."""
    interval = result.confidence_interval(CONFIDENCE)
    return Comparison(
        ratio=math.exp(log_ratio),
        low=math.exp(float(interval.low)),
        high=math.exp(float(interval.high)),
        p_value=float(result.pvalue),
        n_a=n_a,
        n_b=n_b,
        method=method,
    )


@contextlib.contextmanager
def _quiet_precision() -> Iterator[None]:
    """scipy warns when one side's trials agree to ~15 digits (an exact figure among timed ones);
    the variance it then uses is near zero, which is the truth, so the warning is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        yield


def _rank_comparison(xa: np.ndarray, xb: np.ndarray, *, paired: bool = False) -> Comparison:
    median_a, median_b = float(np.median(xa)), float(np.median(xb))
    ratio = (1.0 if median_b == 0 else math.inf) if median_a == 0 else median_b / median_a
    if paired:
        diffs = xb - xa
        p = 1.0 if not diffs.any() else float(stats.wilcoxon(diffs).pvalue)
        method = "Wilcoxon signed-rank, ratio of medians"
    else:
        p = (
            1.0
            if np.array_equal(np.sort(xa), np.sort(xb))
            else float(stats.mannwhitneyu(xb, xa, alternative="two-sided").pvalue)
        )
        method = "Mann-Whitney U, ratio of medians"
    return Comparison(ratio, ratio, ratio, p, len(xa), len(xb), method)


def dispersion(misses: Sequence[int], lookups: Sequence[int]) -> float:
    """Pearson over-dispersion of per-trial miss counts around their pooled ratio (≥ 1).

    1 means the trials vary as binomial draws would; 4 means their variance
    is four times that, and intervals must be twice as wide.
    """
    k = np.asarray(misses, dtype=float)
    n = np.asarray(lookups, dtype=float)
    keep = n > 0
    k, n = k[keep], n[keep]
    if len(k) < 2 or n.sum() == 0:
        return 1.0
    p = k.sum() / n.sum()
    if p <= 0 or p >= 1:
        return 1.0
    chi2 = float((((k - n * p) ** 2) / (n * p * (1 - p))).sum())
    return max(1.0, chi2 / (len(k) - 1))


def compare_proportions(
    misses_a: Sequence[int], lookups_a: Sequence[int], misses_b: Sequence[int], lookups_b: Sequence[int]
) -> Comparison | None:
    """Miss ratio of B against A as a relative risk, Katz interval widened by measured over-dispersion."""
    ka, na, kb, nb = sum(misses_a), sum(lookups_a), sum(misses_b), sum(lookups_b)
    if na == 0 or nb == 0:
        return None
    phi = max(dispersion(misses_a, lookups_a), dispersion(misses_b, lookups_b))
    if ka == 0 and kb == 0:
        return Comparison(1.0, 1.0, 1.0, 1.0, na, nb, "relative risk (no misses on either side)")
    # Half a miss on each side of a zero keeps the log ratio finite (the usual continuity correction).
    zero = ka == 0 or kb == 0
    ka_, kb_ = (ka + 0.5, kb + 0.5) if zero else (ka, kb)
    na_, nb_ = (na + 1, nb + 1) if zero else (na, nb)
    log_rr = math.log((kb_ / nb_) / (ka_ / na_))
    se = math.sqrt(max(1 / ka_ - 1 / na_ + 1 / kb_ - 1 / nb_, 0.0) * phi)
    if se == 0:
        return Comparison(math.exp(log_rr), math.exp(log_rr), math.exp(log_rr), 0.0, na, nb, "relative risk")
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    p = float(2 * stats.norm.sf(abs(log_rr) / se))
    return Comparison(
        ratio=math.exp(log_rr),
        low=math.exp(log_rr - z * se),
        high=math.exp(log_rr + z * se),
        p_value=p,
        n_a=na,
        n_b=nb,
        method=f"relative risk, Katz interval × √{phi:.2g} over-dispersion",
    )


def binomial_interval(successes: int, trials: int) -> tuple[float, float]:
    """Wilson interval of one proportion (what a single run's miss ratio is known to)."""
    if trials <= 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def control_fdr(comparisons: Sequence[Comparison], *, alpha: float = ALPHA) -> list[Comparison]:
    """Benjamini–Hochberg q-values over every comparison (scipy's ``false_discovery_control``)."""
    if not comparisons:
        return []
    qs = stats.false_discovery_control(np.asarray([c.p_value for c in comparisons]), method="bh")
    return [replace(c, q_value=float(q)) for c, q in zip(comparisons, qs, strict=True)]


def _minimum(min_effect: float) -> str:
    """The minimum both ways, as it is applied on a log scale: "25% (×1.25 or ×0.8)", so a fall of
    21 % reads as beyond it."""
    return f"{min_effect:.0%} (×{1 + min_effect:.3g} or ×{1 / (1 + min_effect):.2g})"


def call(comparison: Comparison, *, better: str, min_effect: float, alpha: float = ALPHA) -> Comparison:
    """The verdict: significant after FDR control **and** at least ``min_effect`` away from 1."""
    q = comparison.q_value if comparison.q_value is not None else comparison.p_value
    change = f"{comparison.change:+.1%}" if math.isfinite(comparison.ratio) else "from zero"
    if q >= alpha:
        return replace(comparison, verdict=NO_CHANGE, why=f"not significant (q={q:.2g})")
    if not beyond(comparison.ratio, min_effect):
        return replace(
            comparison,
            verdict=NO_CHANGE,
            why=f"significant but {change} is under the {_minimum(min_effect)} minimum",
        )
    return replace(
        comparison,
        verdict=_direction(comparison.ratio, better),
        why=f"q={q:.2g}, {change} beyond the {_minimum(min_effect)} minimum",
    )


def compare_exact(a: float, b: float, *, better: str) -> tuple[str, str]:
    """Exact metrics are deterministic for a fixed workload: any change is a change."""
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return NO_CHANGE, "identical"
    ratio = b / a if a else math.inf
    return _direction(ratio, better), f"exact: {a:g} → {b:g}"
