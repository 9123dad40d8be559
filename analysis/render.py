"""Tables as Markdown / LaTeX / HTML text, and a small document model rendered to Markdown and HTML
(the report page). Written here, not with pandas' to_markdown / Styler, to need neither tabulate nor jinja2."""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from experiments.files import replace_whole  # noqa: F401  (analysis writes through it; report.py and figures.py import it here)

DASH = "—"


def write_text(path: Path, text: str) -> Path:
    return replace_whole(path, lambda tmp: tmp.write_text(text))


def cell_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return DASH
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1000 or (value != 0 and abs(value) < 0.01) else f"{value:.2f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(cell_text(v)) for v in row) + " |")
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def latex_table(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    spec = "l" * len(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(latex_escape(cell_text(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def html_table(df: pd.DataFrame, classes: dict[str, str] | None = None) -> str:
    """``classes`` maps a cell's text to a CSS class (verdict colouring)."""
    classes = classes or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            text = cell_text(v)
            cls = classes.get(text.split(":")[0].strip(), "")
            cells.append(f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ----------------------------------------------------------------------------- document model

@dataclass
class Block:
    kind: str  # heading | text | table | figure | code
    content: object
    level: int = 2
    caption: str = ""


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("heading", text, level))

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text))

    def table(self, df: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(Block("table", df, caption=caption))

    def figure(self, path: str, caption: str) -> None:
        self.blocks.append(Block("figure", path, caption=caption))

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                out += ["#" * b.level + " " + str(b.content), ""]
            elif b.kind == "text":
                out += [str(b.content), ""]
            elif b.kind == "table":
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out += [markdown_table(b.content), ""]
            elif b.kind == "figure":
                out += [f"![{b.caption}]({b.content})", "", f"*{b.caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        verdicts = {"agrees": "agree", "disagrees": "disagree", "inconclusive": "unsure", "not run here": "notrun"}
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if b.kind == "heading":
                level = min(max(b.level, 2), 4)
                body.append(f"<h{level}>{html.escape(str(b.content))}</h{level}>")
            elif b.kind == "text":
                body.append(f"<p>{_inline(str(b.content))}</p>")
            elif b.kind == "table":
                if b.caption:
                    body.append(f"<p class=caption>{html.escape(b.caption)}</p>")
                body.append(html_table(b.content, verdicts))
            elif b.kind == "figure":
                body.append(f'<figure><img src="{html.escape(str(b.content))}" alt="{html.escape(b.caption)}">'
                            f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        return _PAGE.format(title=html.escape(self.title), body="\n".join(body))

    def write(self, directory: Path, stem: str = "index") -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        return [write_text(directory / f"{stem}.md", self.to_markdown()),
                write_text(directory / f"{stem}.html", self.to_html())]


def _inline(text: str) -> str:
    """The Markdown the report's paragraphs use: `code`, **strong**, *emphasis*, blank-line paragraphs."""
    parts = html.escape(text).split("`")

    def marks(p: str) -> str:
        p = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", p)
        return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", p)

    out = "".join(f"<code>{p}</code>" if i % 2 else marks(p) for i, p in enumerate(parts))
    return out.replace("\n\n", "</p><p>")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.agree {{ background: #e3f6e3; }} td.disagree {{ background: #fbe3e3; }}
td.unsure {{ background: #fdf5dc; }} td.notrun {{ background: #eee; color: #666; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }} figcaption, .caption {{ color: #555; font-style: italic; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style></head><body>
{body}
</body></html>
"""
