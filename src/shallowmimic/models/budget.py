"""Parameter budgets: solve the one dependent width so a model meets a budget. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Callable

from shallowmimic.core.errors import UserError

#: The paper's four budgets (section 6), by their names.
PAPER_BUDGETS = {"1M": 1_000_000, "3.16M": 3_160_000, "10M": 10_000_000, "31.6M": 31_600_000}
TOLERANCE = 0.005


def parse_budget(text: str | int | float) -> int:
    """'3.16M', '300k', '1e6' or a number -> an integer parameter count."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kKmM]?)\s*", text)
        if not m:
            raise UserError(f"invalid budget {text!r} (expected e.g. 1M, 3.16M, 300k, 1000000)")
        value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if value < 1:
        raise UserError(f"invalid budget {text!r}: must be at least 1 parameter")
    return int(round(value))


def format_budget(n: int) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def solve_width(count: Callable[[int], int], budget: int, lo: int = 1, hi: int | None = None) -> int:
    """The integer w >= lo whose `count(w)` is closest to `budget`, for a nondecreasing `count`.

    Exponential search for an upper bracket, then bisection: O(log w) evaluations.
    """
    if count(lo) > budget:
        return lo
    if hi is None:
        hi = max(2 * lo, 2)
        while count(hi) < budget:
            lo, hi = hi, hi * 2
            if hi > 1 << 40:
                raise AssertionError("count() does not grow with the width")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < budget:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: (abs(count(w) - budget), w))


def within(count: int, budget: int, tol: float = TOLERANCE) -> bool:
    return abs(count - budget) <= tol * budget
