"""Every example in README.md and docs/*.md runs here, so the docs cannot drift from the code.

How a Markdown file's fenced blocks are treated:

- ```` ```python ````: run in order, in one namespace per file (``__name__`` is
  ``"__main__"``, as in a script or a notebook), in a fresh temporary working
  directory. Line numbers in tracebacks are those of the Markdown file.
- A ```` ```python ```` block whose first line is ``# file: NAME.py`` is saved
  as ``NAME.py`` in that directory instead of run; a console block runs it.
- A ```` ```text ```` block right after a python block (only blank lines
  between) is the output the python block must print. ``...`` matches any
  text and runs of whitespace compare equal (doctest's ``ELLIPSIS`` and
  ``NORMALIZE_WHITESPACE``).
- ```` ```console ````: each line starting with ``$ `` is a command, ``tilewise``
  or ``python``, run in the working directory with this interpreter; the
  lines up to the next ``$ `` are its expected output (stdout, then stderr),
  compared the same way, less the lines of progress bars (their rates and
  times vary). ``python SCRIPT.py`` runs the script under the
  ``spawn`` start method, as on macOS and Windows, so a script that lacks
  ``if __name__ == "__main__":`` fails here. A command must exit with 0
  unless its expected output says ``error:``.
- Any other block (```` ```sh ````, ```` ```text ````) is not run: it holds what CI
  cannot run, such as ``make`` targets or a remote cluster.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A fenced block, possibly indented (inside a list item): its language and its code.
FENCE = re.compile(r"^([ \t]*)```([\w-]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
SCRIPT_NAME = re.compile(r"#\s*file:\s*(\S+\.py)\s*$")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: A line of a progress bar (tqdm), as a command writes it on stderr.
PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|.*$\n?", re.MULTILINE)
#: Runs a script as ``python SCRIPT.py`` would, with workers started by spawn.
SPAWN_RUNNER = (
    "import multiprocessing, runpy, sys; multiprocessing.set_start_method('spawn'); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
COMMAND_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the block's first code line in the Markdown file
    output: str | None = None  # the ```text block that follows, for python blocks


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each python block with the output after it."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start(3)) + 1
        found.append((m.group(2), textwrap.dedent(m.group(3)), line, m.start(), m.end()))
    result = []
    for i, (language, code, line, _, end) in enumerate(found):
        output = None
        if language == "python" and i + 1 < len(found):
            next_language, next_code, _, next_start, _ = found[i + 1]
            if next_language == "text" and not text[end:next_start].strip():
                output = next_code
        result.append(Block(language, code, line, output))
    return result


def check_output(want: str, got: str, where: str) -> None:
    checker = doctest.OutputChecker()
    if not checker.check_output(want, got, OPTIONS):
        pytest.fail(f"{where}: output differs\n--- expected\n{want}\n--- got\n{got}")


def run_python(block: Block, namespace: dict[str, object], path: Path) -> None:
    # Blank lines in front make tracebacks point at the Markdown file's lines.
    source = "\n" * (block.line - 1) + block.code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, str(path), "exec"), namespace)
    if block.output is not None:
        check_output(block.output, printed.getvalue(), f"{path.name}:{block.line}")


def run_console(block: Block, path: Path) -> None:
    commands: list[tuple[str, list[str], int]] = []
    for offset, line in enumerate(block.code.splitlines()):
        if line.startswith("$ "):
            commands.append((line[2:], [], block.line + offset))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            pytest.fail(f"{path.name}:{block.line}: console output before any '$ ' command")
    for command, expected, line in commands:
        argv = shlex.split(command)
        if argv[0] == "tilewise":
            argv = [sys.executable, "-m", "tilewise", *argv[1:]]
        elif argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
            argv = [sys.executable, "-c", SPAWN_RUNNER, *argv[1:]]
        elif argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        else:
            pytest.fail(f"{path.name}:{line}: only tilewise and python commands run: {command!r}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        want = "\n".join(expected)
        where = f"{path.name}:{line} ({command})"
        printed = done.stdout + PROGRESS_LINE.sub("", done.stderr)
        check_output(want + "\n" if want else "", printed, where)
        if "error:" not in want.lower():
            assert done.returncode == 0, f"{where}: exit code {done.returncode}\n{done.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks(path):
        if block.language == "python":
            first_line = block.code.partition("\n")[0]
            script = SCRIPT_NAME.fullmatch(first_line.strip())
            if script is not None:
                (tmp_path / script.group(1)).write_text(block.code, encoding="utf-8")
            else:
                run_python(block, namespace, path)
        elif block.language == "console":
            run_console(block, path)


def test_blocks_pairs_outputs_and_checks_them(tmp_path: Path) -> None:
    """The harness itself: a text block is an output only right after a python block."""
    sample = tmp_path / "sample.md"
    sample.write_text(
        "Intro.\n\n```python\nprint(1 + 1)\n```\n\n```text\n2\n```\n\n"
        "Prose.\n\n```text\nnot an output\n```\n\n```sh\nmake demo\n```\n\n"
        "- a list item:\n\n  ```python\n  x = 1\n  ```\n",
        encoding="utf-8",
    )
    found = blocks(sample)
    assert [(b.language, b.line, b.output) for b in found] == [
        ("python", 4, "2\n"),
        ("text", 8, None),
        ("text", 14, None),
        ("sh", 18, None),
        ("python", 24, None),
    ]
    assert found[-1].code == "x = 1\n"
    check_output("took ... s\n", "took 0.25 s\n", "sample")
    with pytest.raises(pytest.fail.Exception, match="output differs"):
        check_output("3\n", "2\n", "sample")


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:40]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes for a Markdown file's headings (code blocks left out)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = sum(1 for a in found if a == slug or re.fullmatch(re.escape(slug) + r"-\d+", a))
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_links_into_the_guide_resolve() -> None:
    """Every relative link in the docs names a file that exists, and a heading in it."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for path in DOCS:
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for target in link.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            name, _, anchor = target.partition("#")
            linked = path if not name else path.parent / name
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path.relative_to(ROOT)} -> {target}: no such heading")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_is_found(path: Path) -> None:
    """No python block escapes the runner (an unclosed or oddly indented fence would)."""
    opened = len(re.findall(r"^[ \t]*```python\b", path.read_text(encoding="utf-8"), re.MULTILINE))
    assert opened == sum(block.language == "python" for block in blocks(path))
