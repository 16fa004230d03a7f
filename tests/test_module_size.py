"""No module of the package is over :data:`LIMIT` lines unless its docstring says why.

Small modules, one concept each, is a house rule; a longer module is allowed when it is one concept at that
length, and then its module docstring has a paragraph starting with ``Length:`` that gives the reason, so the
reader who opens it knows why it was not split (and the next one who grows it must think about it).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bertscope"
LIMIT = 500
MARKER = "Length:"


def length_reason(source: str) -> str | None:
    """The text after the ``Length:`` marker at the start of a line of the module docstring, or None."""
    doc = ast.get_docstring(ast.parse(source), clean=True) or ""
    for line in doc.splitlines():
        if line.startswith(MARKER) and line.removeprefix(MARKER).strip():
            return line.removeprefix(MARKER).strip()
    return None


def test_length_reason_reads_only_a_marked_line_of_the_docstring() -> None:
    assert length_reason('"""Title.\n\nLength: one concept, the table.\n"""\nx = 1\n') == "one concept, the table."
    assert length_reason('"""Title; Length: inline is no reason.\n"""\n') is None
    assert length_reason('"""Title.\n\nLength:\n"""\n') is None  # a marker without a reason
    assert length_reason('"""Title."""\n# Length: a comment is not the docstring\n') is None
    assert length_reason("x = 1\n") is None


def test_every_long_module_says_why_it_is_long() -> None:
    long = {path.relative_to(SRC).as_posix(): path.read_text(encoding="utf-8") for path in sorted(SRC.rglob("*.py"))
            if "__pycache__" not in path.parts}
    long = {name: text for name, text in long.items() if len(text.splitlines()) > LIMIT}
    silent = sorted(f"{name} ({len(text.splitlines())} lines)" for name, text in long.items()
                    if length_reason(text) is None)
    assert not silent, (f"modules over {LIMIT} lines whose docstring has no line starting with {MARKER!r} giving "
                        f"the reason (split them, or say why they are one concept): {silent}")
