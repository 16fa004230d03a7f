"""Writing a report out: Markdown from the document model, HTML rendered from that same Markdown, and every
table as CSV and LaTeX (booktabs) under ``tables/``.

The HTML is markdown-it-py's rendering of report.md (CommonMark plus GFM tables, raw HTML off so no text of a run
can inject markup), wrapped in a page with a style sheet; the only change made to the rendering is that each image
file of the report folder is inlined as a base64 data URI, so report.html is one self-contained file and the two
files can never disagree. Each figure is embedded as its PNG and linked as PNG, SVG and PDF; each table is
followed by links to its CSV and LaTeX files.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import mimetypes
import re
from pathlib import Path
from typing import Any

from bertscope.core.results import write_text_atomic
from bertscope.report.document import Section
from bertscope.report.latex import to_latex

__all__ = ["markdown_parser", "to_html", "to_markdown", "write_tables"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:min(100%,760px);border:1px solid #eee}code{background:#f5f5f5;padding:0 .2em}
p.files{font-size:.85em;color:#555;margin-top:-.6em}
"""

# marks how many plots decoded, so a headless browser (and the test suite) can check the report shows them
_LOADED_SCRIPT = ("<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
                  "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}"
                  "document.body.setAttribute('data-plots-loaded',ok+'/'+im.length);});</script>")


def _cell(text: str) -> str:
    """A table cell or image caption on one line, its pipes escaped."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section], out: Path) -> str:
    """The report as Markdown; images are referenced by their path relative to ``out``, with a caption line."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            if block.kind == "text":
                lines += [block.text, ""]
            elif block.kind == "table":
                if block.text:
                    lines += [block.text, ""]
                lines.append("| " + " | ".join(_cell(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
                if block.name:
                    lines += [f"Table files: [CSV](tables/{block.name}.csv) · [LaTeX](tables/{block.name}.tex)", ""]
            elif block.kind == "image" and block.image is not None:
                link = block.image.relative_to(out).as_posix()
                short = re.split(r"[:;]\s|\.\s", block.text, maxsplit=1)[0]  # the caption's first clause
                alt = _cell(short).replace("[", "\\[").replace("]", "\\]")
                stem = link.rsplit(".", 1)[0]
                formats = " · ".join(f"[{fmt.upper()}]({stem}.{fmt})" for fmt in ("png", "svg", "pdf"))
                lines += [f"![{alt}]({link})", "", f"{_cell(block.text)} ({formats})", ""]
    return "\n".join(lines).rstrip() + "\n"


def markdown_parser() -> Any:
    """The one Markdown dialect of reports: CommonMark with GFM tables, raw HTML escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def to_html(title: str, markdown: str, out: Path) -> str:
    """A self-contained HTML page of ``markdown`` (see the module docstring); ``out`` holds its image files."""
    parser = markdown_parser()
    tokens = parser.parse(markdown)
    for token in tokens:
        for child in token.children or ():
            if child.type == "image":
                src = str(child.attrGet("src") or "")
                data = _data_uri(out, src)
                if data is not None:
                    child.attrSet("src", data)
    body = parser.renderer.render(tokens, parser.options, {})
    return "\n".join([
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title>",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<style>{_CSS}</style></head><body>",
        f"<main>\n{body}</main>",
        _LOADED_SCRIPT,
        "</body></html>",
    ]) + "\n"


def _data_uri(out: Path, src: str) -> str | None:
    """``src`` (a path relative to the report folder) as a data URI; None for anything else (left as it is)."""
    if not src or "://" in src or src.startswith(("data:", "/")):
        return None
    path = out / src
    if not path.is_file():
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _stem(title: str, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", title).strip("-").lower()[:70] or "table"
    candidate, i = name, 2
    while candidate in used:
        candidate, i = f"{name}-{i}", i + 1
    used.add(candidate)
    return candidate


def _plain(text: str) -> str:
    """A Markdown cell as plain text (for the CSV): code spans lose their backticks."""
    return re.sub(r"`([^`]*)`", r"\1", str(text))


def write_tables(sections: list[Section], out: Path) -> list[Path]:
    """Write every table of ``sections`` as ``tables/<name>.csv`` (the cells as shown) and ``tables/<name>.tex``
    (:func:`~bertscope.report.latex.to_latex`), naming each block's files in ``block.name``; returns the files."""
    used: set[str] = {"aggregated"}
    files: list[Path] = []
    for section in sections:
        for block in section.blocks:
            if block.kind != "table":
                continue
            block.name = _stem(section.title, used)
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow([_plain(h) for h in block.headers])
            writer.writerows([[_plain(c) for c in row] for row in block.rows])
            files.append(write_text_atomic(out / "tables" / f"{block.name}.csv", buffer.getvalue()))
            tex = to_latex(block.headers, block.rows, caption=block.text or section.title,
                           label=f"tab:{block.name}")
            files.append(write_text_atomic(out / "tables" / f"{block.name}.tex", tex))
    return files
