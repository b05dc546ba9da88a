"""How many timed runs a method gets after its warm-up."""

from __future__ import annotations


def repeats_for(warmup_seconds: float, most: int, least: int, budget: float) -> int:
    """Timed runs after a warm-up that took ``warmup_seconds``: ``most``, fewer for slow methods.

    Slow methods get as many runs as fit in ``budget`` seconds, never fewer
    than ``least``: a suite whose slowest alternative is 200x slower than the
    fastest finishes, and every median still has several runs.

    >>> repeats_for(0.01, most=5, least=3, budget=10.0)
    5
    >>> repeats_for(4.0, most=5, least=3, budget=10.0)
    3
    """
    if warmup_seconds <= 0:
        return most
    return max(least, min(most, int(budget / warmup_seconds)))
