"""The report's content model and its two renderers: a list of blocks (headings, paragraphs, tables,
figures, code) becomes Markdown or one self-contained HTML page, so the two files cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape


# -- blocks ----------------------------------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str
    lead: str = ""  # shown in bold before the text


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    css: str = ""


@dataclass
class Figure:
    name: str  # file stem of the SVG written beside the Markdown
    svg: str
    caption: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Table | Figure | Code


# -- rendering -------------------------------------------------------------------------------------------
def to_markdown(blocks: list[Block], title: str, plot_dir: str = "report-plots") -> str:
    out = [f"# {md_escape(title)}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {md_escape(b.text)}")
        elif isinstance(b, Para):
            out.append((f"**{md_escape(b.lead.strip())}** " if b.lead else "") + md_escape(b.text))
        elif isinstance(b, Table):
            out.append(markdown_table(b.header, b.rows, b.bold))
        elif isinstance(b, Figure):
            out.append(f"![{md_escape(b.caption)}]({plot_dir}/{b.name}.svg)\n\n*{md_escape(b.caption)}*")
        elif isinstance(b, Code):
            fence = "`" * max(3, _longest_run(b.text, "`") + 1)
            out.append(f"{fence}text\n{b.text}\n{fence}")
        out.append("")
    return "\n".join(out)


def markdown_table(header: list[str], rows: list[list[str]], bold: set[tuple[int, int]] | None = None) -> str:
    """A GitHub-flavoured Markdown table; cells escaped, ``bold`` holds (row, column) indices."""
    bold = bold or set()
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        lines.append(
            "| " + " | ".join(f"**{_cell(c)}**" if (i, j) in bold else _cell(c) for j, c in enumerate(row)) + " |"
        )
    return "\n".join(lines)


def to_html(blocks: list[Block], title: str) -> str:
    body, toc = [], []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{escape(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{escape(b.text)}</h{b.level}>")
            if b.anchor:
                toc.append(f'<a href="#{escape(b.anchor)}">{escape(b.text)}</a>')
        elif isinstance(b, Para):
            lead = f"<strong>{escape(b.lead)}</strong>" if b.lead else ""
            body.append(f"<p>{lead}{escape(b.text)}</p>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Figure):
            body.append(
                f'<figure class="plot" id="{escape(b.name)}">{b.svg}<figcaption>{escape(b.caption)}</figcaption></figure>'
            )
        elif isinstance(b, Code):
            body.append(f"<pre>{escape(b.text)}</pre>")
    nav = f"<nav>{' · '.join(toc)}</nav>" if toc else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{nav}\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    rows = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, c in enumerate(row):
            text = f"<strong>{escape(c)}</strong>" if (i, j) in t.bold else escape(c)
            cells.append(f"<th>{text}</th>" if j == 0 else f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="{escape(t.css)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2rem auto;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
nav{font-size:.9rem;margin-bottom:1rem}nav a{color:#0a58ca;text-decoration:none}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #d6d6d6;padding:.3rem .55rem;text-align:left;vertical-align:top}
thead th{background:#f3f5f7}tbody th{font-weight:600;background:#fafafa}
td{font-variant-numeric:tabular-nums}table.matrix td,table.cost td{text-align:right;white-space:nowrap}
table.cost td:nth-child(2){text-align:left}
table.break-even td:last-child{font-size:.85rem}
figure.plot{display:inline-block;vertical-align:top;width:min(100%,560px);margin:.5rem 1rem .5rem 0}
figure.plot svg{width:100%;height:auto}figcaption{font-size:.85rem;color:#555}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:.6rem;white-space:pre-wrap;word-break:break-word;font-size:.82rem}
"""


# -- escaping --------------------------------------------------------------------------------------------
def _longest_run(text: str, ch: str) -> int:
    best = cur = 0
    for c in text:
        cur = cur + 1 if c == ch else 0
        best = max(best, cur)
    return best


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>$|#"})


def md_escape(text: str) -> str:
    return text.translate(_MD_SPECIAL)


def _cell(text: str) -> str:
    return md_escape(text).replace("\n", " ")
