"""The benchmark suite: the product's workloads, side by side, through every backend.

Not part of the wheel: it lives beside the package, in the repository, and
runs from the repository's root as ``python -m benchmarks`` (``make bench``
runs the full suite). Each workload (:mod:`~benchmarks.workloads`) runs
through tilewise's backends, on its public API only, and through what users
pick instead (:mod:`~benchmarks.alternatives`), every method in a process of
its own (:mod:`~benchmarks.runner`) whose whole process tree's memory is
sampled meanwhile (:mod:`~benchmarks.memory`). The suite
(:mod:`~benchmarks.suite`) reports medians, ratios to the best plain call,
megapixels per second and peak memory, judges every target the issues set
(:mod:`~benchmarks.targets`), and writes a Markdown report and a plot
(:mod:`~benchmarks.report`). It needs ``pip install -r
benchmarks/requirements.txt``.

Importing this package imports nothing heavy: the command line can say what
is missing before anything fails.
"""
