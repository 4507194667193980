"""A report as a list of blocks, rendered to Markdown, LaTeX, HTML and CSV.

Text may use ``**bold**`` and ```code``` inline; tables hold display strings
(with ±, Δ, →) and optionally a DataFrame of the raw numbers for CSV.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    csv_name: str | None = None
    """File stem under ``csv/`` for :attr:`data` (or the displayed strings when None)."""
    data: pd.DataFrame | None = None


@dataclass
class Figure:
    stem: str
    """Path relative to the report folder, without extension (``.png`` and ``.svg`` exist)."""
    caption: str


Block = Heading | Text | Bullets | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def render_markdown(doc: Document, *, csv_links: bool = True) -> str:
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * (block.level + 1)} {block.text}", ""]
        elif isinstance(block, Text):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            cells = [[c.replace("|", "\\|") for c in row] for row in block.rows]
            out += [
                tabulate(cells, headers=block.headers, tablefmt="github", disable_numparse=True)
            ]
            if block.csv_name and csv_links:
                out += ["", f"[CSV](csv/{block.csv_name}.csv)"]
            out += [""]
        elif isinstance(block, Figure):
            out += [
                f"![{block.caption}]({block.stem}.png)",
                "",
                f"*{block.caption}* ([SVG]({block.stem}.svg))",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "^": r"\^{}",
    "~": r"\~{}",
}
_TEX_UNICODE = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "→": r"$\rightarrow$",
    "↔": r"$\leftrightarrow$",
    "—": "---",
    "–": "--",
    "−": "-",
    "✓": r"\checkmark{}",
    "✗": r"$\times$",
    "λ": r"$\lambda$",
    "τ": r"$\tau$",
    "δ": r"$\delta$",
    "≥": r"$\geq$",
    "×": r"$\times$",
}


def tex_escape(text: str) -> str:
    escaped = "".join(_TEX_SPECIAL.get(c, c) for c in text)
    escaped = "".join(_TEX_UNICODE.get(c, c) for c in escaped)
    escaped = _BOLD.sub(r"\\textbf{\1}", escaped)
    return _CODE.sub(r"\\texttt{\1}", escaped)


def render_latex(doc: Document) -> str:
    out = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage[margin=1.5cm,landscape]{geometry}",
        r"\usepackage{booktabs,graphicx,amssymb}",
        r"\usepackage[hidelinks]{hyperref}",
        f"\\title{{{tex_escape(doc.title)}}}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
    ]
    commands = {1: "section", 2: "subsection", 3: "subsubsection"}
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"\\{commands.get(block.level, 'paragraph')}*{{{tex_escape(block.text)}}}")
        elif isinstance(block, Text):
            out += [tex_escape(block.text), ""]
        elif isinstance(block, Bullets):
            out += [r"\begin{itemize}"] + [f"\\item {tex_escape(i)}" for i in block.items]
            out += [r"\end{itemize}"]
        elif isinstance(block, Table):
            spec = "l" * len(block.headers)
            out += [
                r"\begin{center}\resizebox{\linewidth}{!}{%",
                f"\\begin{{tabular}}{{{spec}}}",
                r"\toprule",
                " & ".join(tex_escape(h) for h in block.headers) + r" \\",
                r"\midrule",
            ]
            out += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in block.rows]
            out += [r"\bottomrule", r"\end{tabular}}\end{center}", ""]
        elif isinstance(block, Figure):
            out += [
                r"\begin{figure}[h]\centering",
                f"\\includegraphics[width=0.9\\linewidth,height=0.8\\textheight,keepaspectratio]{{{block.stem}.png}}",
                f"\\par{{\\small {tex_escape(block.caption)}}}",
                r"\end{figure}",
            ]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#eee}tr:nth-child(even){background:#f7f7f7}
img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}
.scroll{overflow-x:auto}"""


def _html_inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    return _CODE.sub(r"<code>\1</code>", escaped)


def render_html(doc: Document, *, csv_links: bool = True) -> str:
    title = html.escape(doc.title)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            level = min(block.level + 1, 6)
            out.append(f"<h{level}>{_html_inline(block.text)}</h{level}>")
        elif isinstance(block, Text):
            out.append(f"<p>{_html_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_html_inline(i)}</li>" for i in block.items)
            out.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            link = ""
            if block.csv_name and csv_links:
                link = f'<p><a href="csv/{block.csv_name}.csv">CSV</a></p>'
            out.append(f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>{link}')
        elif isinstance(block, Figure):
            caption = html.escape(block.caption)
            out.append(
                f'<figure><img src="{block.stem}.svg" alt="{caption}">'
                f'<figcaption>{caption} (<a href="{block.stem}.png">PNG</a>)</figcaption></figure>'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_csvs(doc: Document, folder: Path) -> list[Path]:
    """Every table with a ``csv_name`` as ``folder/<csv_name>.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for block in doc.blocks:
        if isinstance(block, Table) and block.csv_name:
            frame = block.data
            if frame is None:
                frame = pd.DataFrame(block.rows, columns=block.headers)
            path = folder / f"{block.csv_name}.csv"
            if path in written:
                raise FileExistsError(f"two tables of one report are both named {path.name}")
            frame.to_csv(path, index=False)
            written.append(path)
    return written
