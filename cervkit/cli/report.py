"""``outputs/index.html``: the page ``make run`` leaves for a person to open.

It links every executed notebook (as HTML, converted with nbconvert, and as ``.ipynb``), shows the figures each
saved (``outputs/figures/NN_*.png``, grouped by notebook), and puts the headline numbers in one table: the shipped
models' held-out scores from their cards, and what the notebooks recorded with :func:`cervkit.viz.record_result`
(``outputs/results/NN_*.json``).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["notebook_html", "write_index"]


def notebook_html(executed: str | PathLike[str]) -> Path | None:
    """Convert an executed notebook to HTML beside it (``NN_name.html``).

    Parameters
    ----------
    executed : str or PathLike
        The executed ``.ipynb``.

    Returns
    -------
    pathlib.Path or None
        The HTML file, or None when the notebook could not be read or converted.
    """
    import nbformat
    from nbconvert import HTMLExporter

    path = Path(executed)
    try:
        body, _ = HTMLExporter(template_name="classic").from_notebook_node(nbformat.read(path, as_version=4))
    except Exception:  # a broken copy still gets its .ipynb link
        return None
    out = path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def _zoo_rows() -> list[tuple[str, str, str, str]]:
    from cervkit.zoo import store

    rows = []
    for name in store.available():
        card = store.card(name)
        for source, m in card.get("metrics", {}).items():
            rows.append((f"shipped model {name}", f"{source}: Dice per vertebra / per image, bodies found",
                         f"{m['dice_vertebra']:.3f} / {m['dice_image']:.3f}, {m['found']:.1%}",
                         f"{m['images']} held-out test images, {m['seconds_median']:.3f} s per image"))
    return rows


def _recorded_rows(results_dir: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        for metric, entry in json.loads(path.read_text()).items():
            value = entry["value"]
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            rows.append((path.stem, metric, f"{shown} {entry.get('unit', '')}".strip(), entry.get("note", "")))
    return rows


def write_index(outputs: str | PathLike[str], results: Sequence[Any]) -> Path:
    """Write ``outputs/index.html`` for one ``make run``.

    Parameters
    ----------
    outputs : str or PathLike
        The outputs folder (``figures/``, ``results/`` and the executed notebooks below it).
    results : sequence of cervkit.cli.notebooks.NotebookResult
        The notebooks just run.

    Returns
    -------
    pathlib.Path
        The page.
    """
    out = Path(outputs)
    figures = sorted((out / "figures").glob("*.png"))
    esc = html.escape
    rel = lambda p: Path(p).resolve().relative_to(out.resolve()).as_posix() if Path(p).resolve().is_relative_to(out.resolve()) else Path(p).resolve().as_uri()  # noqa: E731
    parts = ["<!doctype html><meta charset='utf-8'><title>cervkit: make run</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-height:220px;margin:4px;"
             "border:1px solid #ddd}.fail{color:#b00}</style>",
             f"<h1>cervkit: notebooks run {esc(time.strftime('%Y-%m-%d %H:%M'))}</h1>",
             "<h2>Headline numbers</h2><table><tr><th>where</th><th>what</th><th>value</th><th>on</th></tr>"]
    for row in _zoo_rows() + _recorded_rows(out / "results"):
        parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
    parts.append("</table><h2>Notebooks</h2><table><tr><th>notebook</th><th>status</th><th>seconds</th>"
                 "<th>executed copy</th></tr>")
    for r in results:
        page = Path(r.executed).with_suffix(".html")
        link = f"<a href='{rel(page)}'>html</a> · " if page.is_file() else ""
        status = "ok" if r.error is None else f"<span class='fail'>FAILED: {esc(r.error)}</span>"
        parts.append(f"<tr><td>{esc(Path(r.path).stem)}</td><td>{status}</td><td>{r.seconds:.0f}</td>"
                     f"<td>{link}<a href='{rel(r.executed)}'>ipynb</a></td></tr>")
    parts.append("</table><h2>Figures</h2>")
    for r in results:
        prefix = Path(r.path).name[:2]
        mine = [f for f in figures if f.name.startswith(prefix + "_")]
        if mine:
            parts.append(f"<h3>{esc(Path(r.path).stem)}</h3>")
            parts += [f"<a href='{rel(f)}'><img src='{rel(f)}' title='{esc(f.name)}'></a>" for f in mine]
    page = out / "index.html"
    page.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return page
