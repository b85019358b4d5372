"""The DVC plots of ``dvc.yaml`` as one HTML page that opens offline (``make plots``).

``dvc plots show`` writes a page whose scripts come from a CDN: offline it is a white page.
This page holds DVC's own rendering of each plot (the Vega-Lite specs ``dvc plots show --json``
prints, so the templates and labels of ``dvc.yaml`` apply, and ``plots/`` holds the project's
templates) with Vega inlined (:mod:`tabreg.offline`). A plot whose data holds no points, such as
the learning curve of a model that is not an MLP, says so in a sentence instead of drawing an
empty panel; a plot whose file is missing says that.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tabreg import offline
from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.io import write_text

PAGE = "plots.html"
#: vega-embed's menu without its links to the online Vega editor.
_EMBED_OPTIONS = {"renderer": "svg",
                  "actions": {"export": True, "source": False, "compiled": False,
                              "editor": False}}


def dvc_plots(root: Path) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """``dvc plots show --json`` in ``root``: plot id -> Vega-Lite specs, and id -> error."""
    done = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=root,
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise TabregError(f"dvc plots show failed in {root}: {last}")
    shown = json.loads(done.stdout)
    errors = {e.get("name", "?"): f"{e.get('type', 'error')}: {e.get('msg', '')}"
              for e in shown.get("errors") or []}
    return shown.get("data") or {}, errors


def page(plots: Mapping[str, list[dict]], notes: Mapping[str, str]) -> str:
    """The HTML page: a section per plot, its Vega-Lite specs drawn by the inlined Vega.

    ``notes`` says, per plot id, why a plot has nothing to draw; a plot without specs and
    without a note gets a generic sentence.
    """
    sections, specs = [], {}
    for i, (plot_id, renders) in enumerate(plots.items()):
        body = []
        for j, render in enumerate(r for r in renders if r.get("type") == "vega"):
            specs[f"plot-{i}-{j}"] = render["content"]
            body.append(f'<div class="vega" id="plot-{i}-{j}"></div>')
        if not body:
            note = notes.get(plot_id) or f"{plot_id} holds no data points."
            body.append(f'<p class="note">{html.escape(note)}</p>')
        sections.append(f"<section><h2>{html.escape(plot_id)}</h2>\n{''.join(body)}</section>")
    draw = (f"const specs = {json.dumps(specs)};\nconst options = {json.dumps(_EMBED_OPTIONS)};\n"
            "for (const [id, spec] of Object.entries(specs)) {\n"
            "  vegaEmbed('#' + id, spec, options).catch((error) => {\n"
            "    const box = document.getElementById(id);\n"
            "    box.className = 'note';\n"
            "    box.textContent = 'This plot could not be drawn: ' + error;\n"
            "  });\n}\n")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DVC plots</title>
{offline.style(_CSS)}
{offline.script(offline.vega_bundle())}
</head><body>
<h1>DVC plots</h1>
<p>The plots <code>dvc.yaml</code> declares, drawn as <code>dvc plots show</code> draws them
(workspace), with everything inline so that this page opens without a network.</p>
{chr(10).join(sections)}
{offline.script(draw)}
</body></html>
"""


_CSS = """body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.1em; font-family: monospace; }
section { margin: 0 0 2.5em 0; }
.note { padding: 0.8em 1em; background: #fff8e1; border-left: 4px solid #f0ad4e;
  max-width: 48em; }"""


def learning_curve_note(config: Config, root: Path) -> str:
    """Why the learning curve is empty: the model trained is not an MLP (or none was)."""

    trained = root / config.paths.model_record
    family = json.loads(trained.read_text())["family"] if trained.is_file() else None
    if family is None:
        return "No learning curve: no model has been trained yet (make run)."
    return (f"No learning curve: the model trained in this run is {family}, and only an MLP "
            "trains in epochs (the tuning history is in reports/tuning/).")


def write(config: Config, root: Path) -> dict[str, Any]:
    """Write ``<reports>/plots.html`` from the plots of ``dvc.yaml`` in ``root``."""
    plots, errors = dvc_plots(root)
    reports = config.paths.reports
    notes = {plot_id: f"{plot_id} could not be read ({error}); run the pipeline first "
             "(make run)." for plot_id, error in errors.items()}
    notes.setdefault(f"{reports}/learning_curve.json", learning_curve_note(config, root))
    path = write_text(page(plots, notes), root / reports / PAGE)
    drawn = sorted(p for p, renders in plots.items() if renders)
    return {"page": str(path.relative_to(root)), "plots": drawn,
            "empty": sorted(set(plots) - set(drawn))}
