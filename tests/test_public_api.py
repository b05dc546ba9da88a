"""The public surface of tilewise is a tested list (docs/index.md's table, errors.py's tree)."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import types

import pytest

import tilewise

#: What users may import from tilewise. A change here is a change of the public API.
PUBLIC = {
    "map_tiles",
    "pixelwise",
    "shutdown",
    "Grid",
    "Halo",
    "Tile",
    "TilewiseError",
    "TileError",
    "WorkerDiedError",
    "TileTimeoutError",
    "ArgumentError",
    "ArgumentTypeError",
}


def test_all_is_exactly_the_public_api() -> None:
    assert len(tilewise.__all__) == len(set(tilewise.__all__))
    assert set(tilewise.__all__) == PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module("tilewise")
    value = getattr(module, name)
    assert value.__module__.startswith("tilewise")
    namespace: dict[str, object] = {}
    exec(f"from tilewise import {name}", namespace)
    assert namespace[name] is value


def test_nothing_else_public_at_the_top() -> None:
    # Submodules show up as attributes once imported; they are not names to use from here.
    extra = {
        name
        for name, value in vars(tilewise).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert extra == PUBLIC


def test_version_is_the_installed_one() -> None:
    assert tilewise.__version__ == importlib.metadata.version("tilewise")


def test_error_tree() -> None:
    assert issubclass(tilewise.ArgumentError, ValueError)
    assert issubclass(tilewise.ArgumentTypeError, TypeError)
    for error in (tilewise.ArgumentError, tilewise.ArgumentTypeError, tilewise.TileError):
        assert issubclass(error, tilewise.TilewiseError)
    for error in (tilewise.WorkerDiedError, tilewise.TileTimeoutError):
        assert issubclass(error, tilewise.TileError)


def test_map_tiles_keywords_and_defaults() -> None:
    """As docs/index.md lists them: everything after ``image`` keyword-only, these defaults."""
    parameters = inspect.signature(tilewise.map_tiles).parameters
    assert list(parameters)[:2] == ["func", "image"]
    documented = {
        "tile": 512,
        "boundary": "reflect",
        "cval": 0.0,
        "dtype": None,
        "casting": "same_kind",
        "workers": None,
        "backend": None,
        "pass_tile": False,
        "out": None,
        "progress": False,
    }
    for name, default in documented.items():
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].default == default
    assert parameters["halo"].kind is inspect.Parameter.KEYWORD_ONLY
