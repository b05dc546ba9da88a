"""Whether a fresh interpreter (a worker process) can import a module by name."""

from __future__ import annotations

import importlib.machinery
import sys


def importable_module(module_name: str) -> bool:
    """Whether a fresh interpreter (a worker) can import ``module_name``'s package.

    >>> importable_module("json"), importable_module("no_such_package_here")
    (True, False)
    """
    top = module_name.partition(".")[0]
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return True
    try:
        return importlib.machinery.PathFinder.find_spec(top, sys.path) is not None
    except (ImportError, ValueError):
        return False
