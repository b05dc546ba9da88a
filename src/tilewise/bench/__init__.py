"""``tilewise bench``: the workloads of SPEC section 5, side by side, through every backend.

Each workload (:mod:`~tilewise.bench.workloads`) runs through tilewise's
backends and through what users pick instead (:mod:`~tilewise.bench.alternatives`),
every method in a process of its own (:mod:`~tilewise.bench.runner`) whose
whole process tree's memory is sampled meanwhile (:mod:`~tilewise.bench.memory`).
The suite (:mod:`~tilewise.bench.suite`) reports medians, ratios to the best
plain call, megapixels per second and peak memory, judges every target the
issues set (:mod:`~tilewise.bench.targets`), and writes a Markdown report and
a plot (:mod:`~tilewise.bench.report`). It needs ``pip install "tilewise[bench]"``.

Importing this package imports nothing heavy: the command line can say what
is missing before anything fails.
"""
