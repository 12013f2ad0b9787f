"""Every module of the project passes pyflakes: no undefined name, no unused import or variable, no redefinition.

An undefined name is a crash waiting for its one code path (a module split once left an error handler naming a class
it no longer imported: the database outage answered 500 instead of 503, and only a fault-injection test saw it).
A line that means it (a re-export, a fixture imported for pytest, an import for its side effect) says so with
``# noqa`` and why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyflakes import api as pyflakes_api
from pyflakes import reporter as pyflakes_reporter

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("app", "workers", "storage", "hra", "migrations", "benchmarks", "tests")


class Collect(pyflakes_reporter.Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def unexpectedError(self, filename, message) -> None:  # noqa: N802 - pyflakes' interface
        self.messages.append(f"{filename}: {message}")

    def syntaxError(self, filename, message, lineno, offset, text) -> None:  # noqa: N802
        self.messages.append(f"{filename}:{lineno}: {message}")

    def flake(self, message) -> None:
        source_line = Path(message.filename).read_text().splitlines()[message.lineno - 1]
        if "# noqa" not in source_line:
            self.messages.append(str(message))


def flakes(paths: list[Path]) -> list[str]:
    collect = Collect()
    for path in paths:
        pyflakes_api.checkPath(str(path), collect)
    return collect.messages


def test_the_project_has_no_pyflakes_messages():
    paths = [p for top in CHECKED for p in sorted((ROOT / top).rglob("*.py")) if "node_modules" not in p.parts]
    assert len(paths) > 100
    assert flakes(paths) == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def handler():\n    return DatabaseUnavailable.code\n", "undefined name 'DatabaseUnavailable'"),
        ("import math\n", "'math' imported but unused"),
    ],
)
def test_it_reports_what_it_is_for(tmp_path, source, expected):
    module = tmp_path / "module.py"
    module.write_text(source)
    assert [m.split(": ", 1)[1] for m in flakes([module])] == [expected]


def test_a_noqa_line_is_left_alone(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import math  # noqa: F401 - re-exported\n")
    assert flakes([module]) == []
