"""The exceptions tilewise raises.

::

    Exception
     +-- TilewiseError                   every error tilewise raises itself
          +-- TileError                  one tile failed: reading, calling func, checking or
          |    |                         writing its result; the cause is chained
          |    +-- WorkerDiedError       the process running a tile died (see ``deaths``)
          |    +-- TileTimeoutError      a tile ran longer than ``timeout=``
          +-- ArgumentError(ValueError)  a bad argument, caught before any tile runs
          |    +-- MissingInputError(FileNotFoundError)      ``image`` names no file
          |    +-- SchedulerUnreachableError(ConnectionError)  no Dask scheduler answered
          +-- ArgumentTypeError(TypeError) an argument of the wrong type
          +-- MissingDependencyError(ModuleNotFoundError)  an optional library is not
          |                              installed; the message names the extra to install
          +-- OutOfSpaceError(OSError)   no room on disk or in shared memory for an array

The subclasses of built-in exceptions keep code that already catches
``ValueError``, ``TypeError``, ``FileNotFoundError``, ``OSError`` or
``ImportError`` working. A ``TileError`` carries the :class:`~tilewise.Tile`
it failed on, and is raised, with the same text, whatever the backend: the
original exception (or the worker's traceback) is chained as ``__cause__``.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tilewise.grid import Tile


class TilewiseError(Exception):
    """Base class of every error raised by tilewise itself."""


class ArgumentError(TilewiseError, ValueError):
    """An argument has a bad value; raised before any tile is computed."""


class MissingInputError(ArgumentError, FileNotFoundError):
    """``image`` names a file or folder that does not exist."""


class SchedulerUnreachableError(ArgumentError, ConnectionError):
    """No Dask scheduler answered at the address ``scheduler=`` gives."""


class ArgumentTypeError(TilewiseError, TypeError):
    """An argument has the wrong type; raised before any tile is computed."""


class MissingDependencyError(TilewiseError, ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class OutOfSpaceError(TilewiseError, OSError):
    """No room on the disk, or in shared memory, for an array the run needs."""


class TileError(TilewiseError):
    """Computing one tile failed; ``tile`` says which."""

    def __init__(self, tile: Tile, message: str) -> None:
        super().__init__(f"{tile.describe()}: {message}")
        self.tile = tile
        self.reason = message

    def __reduce__(self) -> tuple[type, tuple[Tile, str]]:
        # Exceptions pickle their ``args`` by default; TileError needs its tile back.
        return (type(self), (self.tile, self.reason))


@dataclass(frozen=True, slots=True)
class Death:
    """How one worker process ended: its exit code (negative: the signal that killed it).

    >>> str(Death(-11)), str(Death(3, while_starting=True))
    ('killed by SIGSEGV', 'exit code 3 while starting')
    """

    exitcode: int
    #: It died before it had loaded the run's job (a script without a main guard).
    while_starting: bool = False

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed it, if one did."""
        if self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return f"signal {-self.exitcode}"

    def __str__(self) -> str:
        if self.signal is None:
            how = f"exit code {self.exitcode}"
        else:
            hint = " (out of memory?)" if self.signal == "SIGKILL" else ""
            how = f"killed by {self.signal}{hint}"
        return how + (" while starting" if self.while_starting else "")


class WorkerDiedError(TileError):
    """The worker process running a tile died, on every attempt allowed.

    ``deaths`` says how, attempt by attempt, as :class:`Death` records
    (empty with Dask, whose scheduler does not say).
    """

    def __init__(self, tile: Tile, message: str, deaths: Sequence[Death] = ()) -> None:
        super().__init__(tile, message)
        self.deaths = tuple(deaths)

    def __reduce__(self) -> tuple[type, tuple[Tile, str, tuple[Death, ...]]]:  # type: ignore[override]
        return (type(self), (self.tile, self.reason, self.deaths))


class TileTimeoutError(TileError):
    """A tile ran longer than the ``timeout=`` given; its worker was killed."""
