"""The sequential A/B decision: keep, discard, or measure another worker pair.

Evidence comes in worker pairs: a fresh candidate worker and a kept-commit worker, a few rounds
each on fresh inputs, paired round by round. A pair's statistic is the mean over its rounds of
log(t_candidate / t_kept); pairs carry the per-process bias, so the decision works on pairs,
not on rounds. After each pair (from ``min_pairs`` on) the rule looks at the mean d̄ over
pairs and its standard error: the sample standard deviation over pairs, floored at the
calibrated between-pair spread ``pair_sd`` (few pairs cannot estimate a spread; the floor is
measured on this machine by ``benchmarks/loop_power.py``). With θ = log(1 − min_gain):

    keep      if  d̄ + q_keep · se < θ     the gain exceeds min_gain with confidence 1 − α
    discard   if  d̄ − q_stop · se > θ     the gain is below min_gain (futility)
    discard   at max_pairs or max_seconds  (inconclusive)
    otherwise another pair

The false-keep rate α (``loop.alpha``) is spent over the looks by Bonferroni (α / number of
possible looks), so stopping early cannot inflate it; ``q`` is the normal quantile when the
floor sets the spread, Student's t with n − 1 degrees of freedom when the pairs are noisier.
A ``neutral`` decision (an equal-result simplification) uses θ = log(1 + max_slowdown): kept
when the candidate is credibly not slower than that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Rule:
    min_gain: float = 0.01
    alpha: float = 0.01  # false keeps
    beta: float = 0.05  # futility stops of a candidate right at the threshold
    min_pairs: int = 2
    max_pairs: int = 8
    pair_sd: float = 0.02  # calibrated floor of the between-pair sd of mean log ratios
    max_slowdown: float = 0.01  # neutral route
    neutral: bool = False

    @property
    def looks(self) -> int:
        return max(1, self.max_pairs - self.min_pairs + 1)

    @property
    def threshold(self) -> float:
        """θ on the log-ratio scale."""
        return math.log1p(self.max_slowdown) if self.neutral else math.log1p(-self.min_gain)


@dataclass(frozen=True)
class Decision:
    action: str  # keep | discard | continue
    gain: float  # 1 − exp(d̄): the candidate's relative gain (positive: faster)
    gain_lo: float  # the gain's lower confidence bound (level 1 − α per look)
    gain_hi: float
    pairs: int
    reason: str
    stop: str = ""  # confident (keep) | futile (credibly below the target) | budget

    @property
    def speedup(self) -> float:
        return 1.0 / (1.0 - self.gain) if self.gain < 1 else float("inf")


def _spread(d: list[float], floor: float) -> tuple[float, int | None]:
    """The standard deviation to use and the t degrees of freedom (None: normal)."""
    n = len(d)
    if n < 2:
        return floor, None
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return (floor, None) if sd <= floor else (sd, n - 1)


def _quantile(p: float, df: int | None) -> float:
    return float(stats.norm.ppf(p) if df is None else stats.t.ppf(p, df))


def decide(pair_stats: list[float], rule: Rule, out_of_budget: bool = False) -> Decision:
    """The decision after ``len(pair_stats)`` pairs (each a mean log ratio cand/kept)."""
    n = len(pair_stats)
    d = sum(pair_stats) / n
    sd, df = _spread(pair_stats, rule.pair_sd)
    se = sd / math.sqrt(n)
    q_keep = _quantile(1 - rule.alpha / rule.looks, df)
    q_stop = _quantile(1 - rule.beta, df)
    upper, lower = d + q_keep * se, d - q_stop * se
    gain, gain_lo, gain_hi = 1 - math.exp(d), 1 - math.exp(upper), 1 - math.exp(d - q_keep * se)
    theta = rule.threshold
    target = (
        f"not slower than {rule.max_slowdown:.1%}"
        if rule.neutral
        else f"gain > {rule.min_gain:.1%}"
    )
    where = f"gain {gain:+.2%} [{gain_lo:+.2%}, {gain_hi:+.2%}] over {n} pairs"
    if n >= rule.min_pairs and upper < theta:
        return Decision(
            "keep", gain, gain_lo, gain_hi, n, f"{where}: {target} (α={rule.alpha})", "confident"
        )
    if n >= rule.min_pairs and lower > theta:
        return Decision("discard", gain, gain_lo, gain_hi, n, f"{where}: not {target}", "futile")
    if n >= rule.max_pairs or out_of_budget:
        budget = "max_pairs" if n >= rule.max_pairs else "max_seconds"
        reason = f"{where}: inconclusive at {budget} ({target}?)"
        return Decision("discard", gain, gain_lo, gain_hi, n, reason, "budget")
    return Decision("continue", gain, gain_lo, gain_hi, n, where)
