"""The platform markers: which platforms skip them, and that every test of a POSIX- or
Linux-only facility carries one, so a Windows or macOS CI job skips it instead of failing.

The scan reads the test files' syntax trees, so it holds on Linux, where nothing skips.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PLATFORM_NEEDS, platform_skip, pytest_collection_modifyitems

TESTS = Path(__file__).resolve().parent

#: ``module.name`` references only POSIX systems have, and those only Linux has.
POSIX_NAMES = {
    ("os", "mkfifo"),
    ("os", "killpg"),
    ("os", "fork"),
    ("os", "setsid"),
    ("os", "getpgid"),
    ("signal", "SIGKILL"),
    ("signal", "SIGSTOP"),
    ("signal", "SIGCONT"),
}
LINUX_NAMES = {("os", "sched_getaffinity"), ("os", "memfd_create")}
#: Modules Windows lacks.
POSIX_MODULES = {"fcntl", "pty", "termios", "resource"}
#: Paths of Linux's own file systems.
LINUX_PATHS = ("/proc/", "/dev/shm")
#: Helpers that use a facility only where it exists, each with why its callers need no marker.
EXEMPT = {
    ("test_dask.py", "segments_held"): "looks for /proc first; without it, finds no segments",
    ("test_faults.py", "die"): "kills as its argument says; the POSIX ways are posix parameters",
}


@pytest.mark.parametrize(
    ("platform", "skipped"),
    [("win32", {"posix", "linux"}), ("darwin", {"linux"}), ("linux", set())],
)
def test_each_platform_skips_the_markers_it_lacks(platform: str, skipped: set[str]) -> None:
    reasons = {marker: platform_skip(marker, platform) for marker in PLATFORM_NEEDS}
    assert {marker for marker, reason in reasons.items() if reason is not None} == skipped
    for marker in skipped:
        assert reasons[marker] == f"{PLATFORM_NEEDS[marker]}: not on {platform}"


class FakeItem:
    """A collected test with these markers, recording the marks the hook adds."""

    def __init__(self, *markers: str) -> None:
        self.markers = set(markers)
        self.added: list[pytest.MarkDecorator] = []

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name in self.markers else None

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.added.append(mark)


@pytest.mark.parametrize("platform", ["win32", "darwin", "linux"])
def test_the_hook_skips_marked_tests_once_with_the_reason(
    platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [FakeItem(), FakeItem("posix"), FakeItem("linux"), FakeItem("posix", "linux")]
    with monkeypatch.context() as patched:
        patched.setattr(sys, "platform", platform)
        pytest_collection_modifyitems(None, items)  # type: ignore[arg-type]
    skips = [[(m.name, m.kwargs["reason"]) for m in item.added] for item in items]
    posix, linux = (platform_skip(marker, platform) for marker in ("posix", "linux"))
    assert skips == [
        [],
        [("skip", posix)] if posix else [],
        [("skip", linux)] if linux else [],
        [("skip", posix or linux)] if posix or linux else [],
    ]


def facilities(node: ast.AST) -> set[str]:
    """The markers what ``node`` itself uses needs, "linux" or "posix", docstrings aside."""
    found = set()
    docstrings = {
        id(body[0].value)
        for child in ast.walk(node)
        if isinstance(child, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and (body := child.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    for child in ast.walk(node):
        if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
            pair = (child.value.id, child.attr)
            if pair in LINUX_NAMES:
                found.add("linux")
            elif pair in POSIX_NAMES or child.value.id in POSIX_MODULES:
                found.add("posix")
        elif isinstance(child, ast.Import | ast.ImportFrom):
            modules = [a.name for a in child.names] if isinstance(child, ast.Import) else []
            if isinstance(child, ast.ImportFrom) and child.module:
                modules.append(child.module)
            if any(m.split(".")[0] in POSIX_MODULES for m in modules):
                found.add("posix")
        elif (
            isinstance(child, ast.Constant)
            and isinstance(child.value, str)
            and id(child) not in docstrings
            and any(path in child.value for path in LINUX_PATHS)
        ):
            found.add("linux")
    return found


def marks(decorators: list[ast.expr]) -> set[str]:
    """The ``pytest.mark.NAME`` names among decorators or a ``pytestmark`` value."""
    return {
        node.attr
        for decorator in decorators
        for node in ast.walk(decorator)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
    }


def module_marks_of(body: list[ast.stmt]) -> set[str]:
    """The marks a module's or class's ``pytestmark = ...`` gives all its tests."""
    return {
        name
        for statement in body
        if isinstance(statement, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets)
        for name in marks([statement.value])
    }


class Module:
    """One test file: its module-level names, and what each needs, through the names it uses."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.symbols: dict[str, ast.AST] = {}
        for statement in self.tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.symbols[statement.name] = statement
            elif isinstance(statement, ast.Assign | ast.AnnAssign):
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.symbols[target.id] = statement
        self._needs: dict[str, set[str]] = {}

    def needs(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> set[str]:
        """What ``node`` needs, with all it reaches by name: helpers, constants, fixtures."""
        found = facilities(node)
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            used |= {arg.arg for arg in node.args.args + node.args.kwonlyargs}  # fixtures
        for name in sorted(used & self.symbols.keys() - seen):
            found |= self.symbol_needs(name, seen | {name})
        return found

    def symbol_needs(self, name: str, seen: frozenset[str]) -> set[str]:
        if (self.name, name) in EXEMPT:
            return set()
        if name not in self._needs:
            self._needs[name] = self.needs(self.symbols[name], seen)
        return self._needs[name]

    def tests(self) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, set[str]]]:
        """Each test function, its qualified name and the marks it carries, its own and
        those of its class and module."""
        module_marks = module_marks_of(self.tree.body)
        for statement in self.tree.body:
            if isinstance(statement, ast.ClassDef) and statement.name.startswith("Test"):
                outer = (
                    module_marks | marks(statement.decorator_list) | module_marks_of(statement.body)
                )
                functions = [(f"{statement.name}.", s, outer) for s in statement.body]
            else:
                functions = [("", statement, module_marks)]
            for prefix, function, inherited in functions:
                if isinstance(
                    function, ast.FunctionDef | ast.AsyncFunctionDef
                ) and function.name.startswith("test"):
                    carried = inherited | marks(function.decorator_list)
                    yield prefix + function.name, function, carried


def unmarked(path: Path) -> list[str]:
    """The tests of ``path`` that use a facility without the marker it needs (linux
    implies posix: Linux is POSIX), each with what it needs."""
    module = Module(path)
    missing = []
    for name, function, carried in module.tests():
        body = ast.Module(body=function.body, type_ignores=[])
        needs = module.needs(body) | {
            need
            for arg in function.args.args
            if arg.arg in module.symbols
            for need in module.symbol_needs(arg.arg, frozenset({arg.arg}))
        }
        if "linux" in needs and "linux" not in carried:
            missing.append(f"{path.name}::{name} needs the linux marker")
        elif "posix" in needs and not carried & {"posix", "linux"}:
            missing.append(f"{path.name}::{name} needs the posix marker")
    return missing


#: Every test file but this one, whose paths and calls are the scan's data, not its uses.
TEST_FILES = sorted(p for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_every_test_of_a_posix_or_linux_facility_carries_its_marker(path: Path) -> None:
    assert unmarked(path) == []


def test_the_scan_sees_an_unmarked_test_through_its_helpers(tmp_path: Path) -> None:
    """A marker removed fails the check: used directly, through a helper, a constant or a
    fixture; an exempt helper, a marked test or a marked parameter does not."""
    source = '''
import os
import signal
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


def kill(pid):
    os.kill(pid, signal.SIGKILL)


def outer(pid):
    kill(pid)


@pytest.fixture
def fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")


def test_direct(tmp_path):
    os.mkfifo(tmp_path / "f")


def test_through_helpers():
    outer(1)


def test_through_a_constant():
    assert SHM.is_dir()


def test_through_a_fixture(fifo):
    pass


@pytest.mark.posix
def test_marked():
    outer(1)


@pytest.mark.posix
def test_posix_is_not_enough():
    assert SHM.is_dir()


class TestGroup:
    pytestmark = pytest.mark.linux

    def test_in_a_marked_class(self):
        assert SHM.is_dir()


def test_portable(tmp_path):
    """Not /proc/: a docstring is no use of it."""
    assert tmp_path.is_dir()
'''
    path = tmp_path / "test_fake.py"
    path.write_text(source, encoding="utf-8")
    assert unmarked(path) == [
        "test_fake.py::test_direct needs the posix marker",
        "test_fake.py::test_through_helpers needs the posix marker",
        "test_fake.py::test_through_a_constant needs the linux marker",
        "test_fake.py::test_through_a_fixture needs the posix marker",
        "test_fake.py::test_posix_is_not_enough needs the linux marker",
    ]


@pytest.mark.parametrize(("module", "helper"), sorted(EXEMPT))
def test_exempt_helpers_exist_and_use_what_they_are_exempt_for(module: str, helper: str) -> None:
    """An exemption outliving its helper, or its reason, would hide nothing but mislead."""
    scanned = Module(TESTS / module)
    assert helper in scanned.symbols
    assert facilities(scanned.symbols[helper])
