"""Writing the report: ``summary.md`` for the pull request, ``report.html`` self-contained."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2330}
h1{font-size:1.7em}h2{border-bottom:1px solid #dde;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccd;padding:.3em .6em}
th{background:#f2f4f8}td{text-align:right}td:first-child{text-align:left}
code{background:#f2f4f8;padding:0 .2em}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.pass{color:#0a7d32}.fail{color:#b3261e;font-weight:bold}
details{margin:1em 0}pre{background:#f7f7fa;padding:1em;overflow:auto;font-size:.85em}
"""


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_to_html(text: str) -> str:
    import mistune

    return mistune.create_markdown(escape=False, plugins=["table"])(text)


def embed_image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    """Every metric: kind, value (median of trials), spread, note — grouped by what measured it."""
    rows = []
    for name, m in sorted(metrics.items()):
        spread = ""
        if m.samples:
            spread = f"{len(m.samples)} trials, {fmt(min(m.samples))}–{fmt(max(m.samples))}"
        elif m.kind == "proportion" and m.lookups:
            spread = f"{sum(m.events)} of {sum(m.lookups)}"
        rows.append([name, m.kind, m.value, m.unit, spread, m.note])
    return md_table(["metric", "kind", "value", "unit", "trials", "note"], rows)


def write_html(
    folder: Path,
    summary_md: str,
    figures: list[tuple[str, Path]],
    manifest: dict[str, Any],
    *,
    metrics: Mapping[str, Any] | None = None,
    headlines: Mapping[str, Mapping[str, Any]] | None = None,
    verdict: Sequence[Any] | None = None,
) -> Path:
    """``report.html``: the summary, then all it leaves out; every figure embedded, no external asset."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>cachelab report {html.escape(folder.name)}</title><style>{_CSS}</style></head><body>",
        markdown_to_html(summary_md),
    ]
    if verdict:
        from cachelab.report.compare import verdict_markdown

        parts.append(markdown_to_html(verdict_markdown(list(verdict), title="Every metric judged")))
    for nb, data in sorted((headlines or {}).items()):
        items = data.get("headlines") or {}
        if items:
            parts.append(f"<h2>{html.escape(str(data.get('title', nb)))}</h2>")
            parts.append(markdown_to_html("\n".join(f"- {k}: **{fmt(v)}**" for k, v in items.items())))
    parts.append("<h2>Figures</h2>")
    for caption, path in figures:
        parts.append(f"<figure>{embed_image(path)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if metrics:
        parts.append("<details><summary>Every metric (metrics.json)</summary>")
        parts.append(markdown_to_html(_metrics_table(metrics)))
        parts.append("</details>")
    parts.append("<details><summary>Manifest</summary><pre>")
    parts.append(html.escape(json.dumps(manifest, indent=2, default=str)))
    parts.append("</pre></details></body></html>")
    out = folder / "report.html"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
