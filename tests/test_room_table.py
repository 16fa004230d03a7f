"""docs/DEVELOPING.md's room table names every module of the package, and only modules that exist.

The table drifted once (modules added without a row); this keeps it equal to the folders, both ways.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "bertscope"
GUIDE = REPO / "docs" / "DEVELOPING.md"
HEADING = "## The house, room by room"


def table_modules(text: str) -> list[str]:
    """The ``.py`` paths named in backticks in the table rows of the room-table section."""
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [name for row in rows for name in re.findall(r"`([\w/]+\.py)`", row)]


def package_modules() -> set[str]:
    """Every module of the package, relative to it; a package's ``__init__.py`` is its folder, not a room."""
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
            if path.name != "__init__.py" and "__pycache__" not in path.parts}


def test_table_parser_reads_rows_of_the_section_only() -> None:
    text = f"`a.py` before\n{HEADING}\n| x | `core/b.py`, `c.py` | says `d.txt` |\n`e.py` prose\n## Next\n| `f.py` |"
    assert table_modules(text) == ["core/b.py", "c.py"]


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    named = table_modules(GUIDE.read_text(encoding="utf-8"))
    assert named, f"no room table under {HEADING!r} in {GUIDE}"
    duplicates = sorted({name for name in named if named.count(name) > 1})
    assert not duplicates, f"named twice in the room table: {duplicates}"
    modules = package_modules()
    missing = sorted(modules - set(named))
    assert not missing, f"modules without a row in docs/DEVELOPING.md's room table: {missing}"
    stale = sorted(set(named) - modules)
    assert not stale, f"the room table names modules that do not exist: {stale}"
