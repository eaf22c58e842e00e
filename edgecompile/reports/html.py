"""One self-contained HTML file: the Markdown report's content as tables, plots embedded as base64 PNGs."""

from __future__ import annotations

import base64
import html
import re


def _md_to_html(markdown: str) -> str:
    """The small Markdown subset our reports use: headings, tables, code blocks, bullets, bold."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not re.fullmatch(r"\|(---\|)+", lines[i]):
                    cells = re.split(r"(?<!\\)\|", lines[i].strip().removeprefix("|").removesuffix("|"))
                    rows.append([c.strip().replace("\\|", "|") for c in cells])
                i += 1
            head, body = rows[0], rows[1:]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            continue
        heading = re.match(r"(#+) (.*)", line)
        if heading:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


_STYLE = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}pre{background:#f5f5f5;padding:8px;overflow-x:auto}img{max-width:100%}"


def html_page(title: str, markdown: str, images: dict[str, bytes] | None = None) -> str:
    """A standalone page; each PNG in ``images`` (caption -> bytes) is inlined as a data URI."""
    figures = "".join(f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,{base64.b64encode(v).decode()}"><figcaption>{html.escape(k)}</figcaption></figure>' for k, v in (images or {}).items())
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{_md_to_html(markdown)}{figures}</body></html>\n"
