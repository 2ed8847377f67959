"""A one-page, self-contained HTML report of a run: summary and tables, plots, the config
and the command that reproduces it.

Everything is inside the one file (plots as base64 PNG, a few lines of inline CSS; no
script, external stylesheet, font or link), so it opens offline, from an MLflow artifact
or attached to an e-mail. Every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

Table = Sequence[Mapping[str, object]]
"""A table as rows of column -> value (the columns: every key, in order of appearance)."""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
  border-bottom: 1px solid #ddd; }
pre, code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption, .meta { color: #666; font-size: 0.85em; }
""".strip()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object) -> str:
    """A table cell's text: floats to 4 significant digits, None and NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_table(rows: Table) -> str:
    """An HTML table of ``rows`` (column -> value), the columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(heading: str, body: str | Table) -> str:
    """A heading and its body: fixed-width text as <pre>, rows of dicts as a table."""
    content = f"<pre>{_e(body)}</pre>" if isinstance(body, str) else html_table(body)
    return f"<section><h2>{_e(heading)}</h2>\n{content}</section>"


def _figure(path: Path) -> str:
    """A plot embedded as a data: URI (a note in its place when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return f'<p class="meta">{_e(path.name)}: not written</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(path.name)}</figcaption></figure>"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("molguide")
    except PackageNotFoundError:
        return "unknown"


def write_html_report(
    path: str | Path,
    title: str,
    sections: Sequence[tuple[str, str | Table]],
    plots: Sequence[str | Path],
    config_yaml: str,
    command: str,
) -> Path:
    """Write a run's report as one self-contained HTML page; returns its path.

    Args:
        path: the file to write (its folder is created).
        title: the page's title and heading.
        sections: (heading, body) in order; a body is fixed-width text (a summary table as
            printed, shown as ``<pre>``) or rows of column -> value (an HTML table).
        plots: PNG files, embedded as base64 ``<img>`` under the heading "Plots" (a missing
            one is named as not written).
        config_yaml: the resolved config, in a collapsible ``<details>`` block.
        command: the command line that reproduces the run, in a code block.
    """
    path = Path(path)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">generated {_e(stamp)} by molguide {_e(_version())}</p>',
        *(_section(heading, body) for heading, body in sections),
    ]
    if plots:
        parts.append("<section><h2>Plots</h2>" + "\n".join(_figure(Path(p)) for p in plots) + "</section>")
    parts += [
        f"<section><h2>Reproduce</h2><pre><code>{_e(command)}</code></pre></section>",
        "<section><h2>Configuration</h2><details><summary>resolved config (YAML)</summary>",
        f"<pre>{_e(config_yaml)}</pre></details></section>",
        "</body></html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
