"""Shared timing and reporting for the benchmark scripts: medians after a warm-up, ratios.

The pieces live in the package (:mod:`tilewise.bench`), where ``tilewise
bench`` uses them too; the scripts here import them from this module.
"""

from __future__ import annotations

from tilewise.bench.machine import LoadElsewhere, cpu_model, machine, usable_cpus
from tilewise.bench.timing import Timing, measure, measure_interleaved, table

__all__ = [
    "LoadElsewhere",
    "Timing",
    "cpu_model",
    "machine",
    "measure",
    "measure_interleaved",
    "table",
    "usable_cpus",
]
