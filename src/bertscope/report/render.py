"""Writing a report out: Markdown from the document model, and HTML rendered from that same Markdown.

The HTML is markdown-it-py's rendering of report.md (CommonMark plus GFM tables, raw HTML off so no text of a run
can inject markup), wrapped in a page with a style sheet; the only change made to the rendering is that each image
file of the report folder is inlined as a base64 data URI, so report.html is one self-contained file and the two
files can never disagree.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path
from typing import Any

from bertscope.report.document import Section

__all__ = ["markdown_parser", "to_html", "to_markdown"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f5f5f5;padding:0 .2em}
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
                lines.append("| " + " | ".join(_cell(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif block.kind == "image" and block.image is not None:
                link = block.image.relative_to(out).as_posix()
                alt = _cell(block.text).replace("[", "\\[").replace("]", "\\]")
                lines += [f"![{alt}]({link})", "", f"{_cell(block.text)} ([{link}]({link}))", ""]
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
