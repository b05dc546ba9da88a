"""The exceptions tilewise raises.

::

    Exception
     +-- TilewiseError                  every error tilewise raises itself
          +-- TileError                 func failed, or returned a wrong shape, on one tile
          |    +-- WorkerDiedError      the process running a tile died (exit code or signal)
          |    +-- TileTimeoutError     a tile ran longer than ``timeout=``
          +-- ArgumentError(ValueError) a bad argument, caught before any work starts
          +-- ArgumentTypeError(TypeError) an argument of the wrong type

``ArgumentError`` and ``ArgumentTypeError`` subclass the built-in ``ValueError``
and ``TypeError`` so that code which already catches those keeps working.
``TileError`` carries the :class:`~tilewise.Tile` it failed on; the original
exception (or the worker's traceback) is chained as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tilewise.grid import Tile


class TilewiseError(Exception):
    """Base class of every error raised by tilewise itself."""


class ArgumentError(TilewiseError, ValueError):
    """An argument has a bad value; raised before any tile is computed."""


class ArgumentTypeError(TilewiseError, TypeError):
    """An argument has the wrong type; raised before any tile is computed."""


class TileError(TilewiseError):
    """Computing one tile failed; ``tile`` says which."""

    def __init__(self, tile: Tile, message: str) -> None:
        super().__init__(f"{tile.describe()}: {message}")
        self.tile = tile
        self.reason = message

    def __reduce__(self) -> tuple[type, tuple[Tile, str]]:
        # Exceptions pickle their ``args`` by default; TileError needs its tile back.
        return (type(self), (self.tile, self.reason))


class WorkerDiedError(TileError):
    """The worker process running a tile died, on every attempt allowed.

    ``deaths`` says how, attempt by attempt: ``"killed by SIGSEGV"``, ``"exit code 3"``.
    """

    def __init__(self, tile: Tile, message: str, deaths: Sequence[str] = ()) -> None:
        super().__init__(tile, message)
        self.deaths = tuple(deaths)

    def __reduce__(self) -> tuple[type, tuple[Tile, str, tuple[str, ...]]]:  # type: ignore[override]
        return (type(self), (self.tile, self.reason, self.deaths))


class TileTimeoutError(TileError):
    """A tile ran longer than the ``timeout=`` given; its worker was killed."""
