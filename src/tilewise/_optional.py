"""Optional dependencies, imported on first use, naming the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from tilewise.errors import MissingDependencyError

#: The extra that installs each optional module.
EXTRAS = {
    "tifffile": "io",
    "zarr": "io",
    "PIL": "io",
    "numba": "compile",
    "distributed": "dask",
    "dask": "dask",
}


def import_optional(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` or explain which ``pip install`` provides it.

    >>> import_optional("no_such_module", "testing")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilewise.errors.MissingDependencyError: no_such_module is needed for testing: pip install "tilewise[...]"
    """  # noqa: E501
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise
        extra = EXTRAS.get(module.split(".")[0], "all")
        raise MissingDependencyError(
            f'{module} is needed for {needed_for}: pip install "tilewise[{extra}]"',
            name=module,
        ) from exc
