"""The sequential A/B decision: keep, discard, or measure another worker pair.

Evidence comes in worker pairs: a fresh candidate worker and a kept-commit worker, a few rounds
each on fresh inputs, paired round by round. A pair's statistic is the mean over its rounds of
log(t_candidate / t_kept); pairs carry the per-process bias, so the decision works on pairs,
not on rounds. After each pair (from ``min_pairs`` on) the rule looks at the mean d̄ over
pairs and its standard error: the sample standard deviation over pairs, floored at the
calibrated between-pair spread ``pair_sd`` (few pairs cannot estimate a spread; the floor is
measured on this machine by ``benchmarks/loop_power.py``). With θ = log(1 − min_gain):

    keep      if  d̄ + q_keep · se < θ               the gain exceeds min_gain (confidence 1 − α)
    discard   if  1 − exp(d̄ − q_β · se) < detect    the gain is credibly below ``detect``, the
                                                     smallest gain worth the time (futility)
    discard   at max_pairs or max_seconds            (inconclusive)
    otherwise another pair

The false-keep rate α (``loop.alpha``) is spent Haybittle–Peto style: every interim look keeps
only at the strict ``interim_alpha`` (0.1%), the final look (max_pairs, or the time budget) at
what is left, α − (looks − 1)·interim_alpha (at least α/2) — a Bonferroni bound, so stopping
early cannot inflate the false-keep rate, while most of α stays for the last, best-informed
look. ``q`` is the normal quantile when the floor sets the spread, Student's t with n − 1
degrees of freedom when the pairs are noisier.
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
    beta: float = 0.1  # futility: confidence that the gain is below ``detect``
    detect: float = 0.04  # the smallest gain the futility rule keeps measuring for
    interim_alpha: float = 0.001
    min_pairs: int = 2
    max_pairs: int = 8
    pair_sd: float = 0.02  # calibrated floor of the between-pair sd of mean log ratios
    max_slowdown: float = 0.01  # neutral route
    neutral: bool = False

    @property
    def looks(self) -> int:
        return max(1, self.max_pairs - self.min_pairs + 1)

    def alpha_at(self, final: bool) -> float:
        """The one-sided level of a look (module doc)."""
        if self.looks == 1:
            return self.alpha
        if not final:
            return min(self.interim_alpha, self.alpha / self.looks)
        return max(self.alpha - (self.looks - 1) * self.interim_alpha, self.alpha / 2)

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
    final = n >= rule.max_pairs or out_of_budget
    q_keep = _quantile(1 - rule.alpha_at(final), df)
    q_stop = _quantile(1 - rule.beta, df)
    upper = d + q_keep * se
    gain, gain_lo, gain_hi = 1 - math.exp(d), 1 - math.exp(upper), 1 - math.exp(d - q_keep * se)
    theta = rule.threshold
    if rule.neutral:
        target = f"not slower than {rule.max_slowdown:.1%}"
    else:
        target = f"gain > {rule.min_gain:.1%}"
    where = f"gain {gain:+.2%} [{gain_lo:+.2%}, {gain_hi:+.2%}] over {n} pairs"
    if n >= rule.min_pairs and upper < theta:
        reason = f"{where}: {target} (α={rule.alpha})"
        return Decision("keep", gain, gain_lo, gain_hi, n, reason, "confident")
    # futility: for a speed-up, credibly below the smallest gain worth measuring; for the
    # neutral route, credibly slower than allowed
    # the reason names the one-sided (1 − β) bound that decided: the printed interval is the
    # keep rule's (1 − α), much wider, and can reach past `detect` on a futile discard
    conf = f"{1 - rule.beta:.0%}"
    if rule.neutral:
        futile = d - q_stop * se > theta
        slow_lo = math.exp(d - q_stop * se) - 1
        below = f"slower than {rule.max_slowdown:.1%} (the slowdown's {conf} lower bound {slow_lo:+.2%})"
    else:
        worth = max(rule.detect, rule.min_gain)
        gain_up = 1 - math.exp(d - q_stop * se)
        futile = gain_up < worth
        below = (
            f"gain below {worth:.0%} (the gain's {conf} upper bound {gain_up:+.2%}), not {target}"
        )
    if n >= rule.min_pairs and futile:
        return Decision("discard", gain, gain_lo, gain_hi, n, f"{where}: {below}", "futile")
    if final:
        budget = "max_pairs" if n >= rule.max_pairs else "max_seconds"
        reason = f"{where}: inconclusive at {budget} ({target}?)"
        return Decision("discard", gain, gain_lo, gain_hi, n, reason, "budget")
    return Decision("continue", gain, gain_lo, gain_hi, n, where)
