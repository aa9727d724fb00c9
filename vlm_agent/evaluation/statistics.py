"""Statistics of success rates: the Wilson score interval every result table reports.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054
"""Standard normal quantile for a two-sided 95% interval, Phi^-1(0.975)."""


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    With ``p = successes / trials`` and ``n = trials``::

        centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
        halfwidth = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        interval  = (centre - halfwidth, centre + halfwidth)

    (Wilson, 1927). Unlike the normal approximation it stays inside [0, 1] and is informative at
    0% and 100% success, which is where many baselines sit. ``trials == 0`` gives (0, 1): nothing
    is known.

    Args:
        successes: Number of successes, ``0 <= successes <= trials``.
        trials: Number of trials.
        z: Normal quantile; the default gives a 95% interval.

    Returns:
        ``(low, high)`` as fractions in [0, 1].
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(
            f"wilson_interval needs 0 <= successes <= trials, got successes={successes}, "
            f"trials={trials}"
        )
    if trials == 0:
        return (0.0, 1.0)
    n = float(trials)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    halfwidth = z / denominator * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # At p = 0 (p = 1) the lower (upper) end is exactly 0 (1); rounding would leave 1e-16 off.
    low = 0.0 if successes == 0 else max(0.0, centre - halfwidth)
    high = 1.0 if successes == trials else min(1.0, centre + halfwidth)
    return (low, high)
