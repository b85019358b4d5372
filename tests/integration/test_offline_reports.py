"""Every HTML report the project writes opens offline, as a file, in a real browser.

Headless Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) opens each page with
the network cut off: a screenshot that is nearly one colour fails (a white page), and a probe
script run in a copy of the page reports what actually applied (Bootstrap's styles, the Font
Awesome face of the Status icons, the Vega marks). The pages come from one flow run on
generated data (an MLP, so there is a learning curve), plus a Data Docs page of a table that
breaks its contract (failing column pairs).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tabreg import cli, offline
from tabreg.data import synthetic
from tabreg.data import validate as val
from tests.conftest import ROOT, build_project

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: No request leaves the machine: every host is unresolvable and the proxy is a closed port.
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")

#: Run inside a copy of the page once it has settled; writes what applied into <pre id=probe>.
PROBE = """<script>
window.addEventListener('load', () => setTimeout(async () => {
  await document.fonts.ready;
  const css = (sel, prop) => { const el = document.querySelector(sel);
    return el ? getComputedStyle(el)[prop] : null; };
  const icon = document.querySelector('i.fas');
  const before = icon ? getComputedStyle(icon, '::before') : null;
  const out = {
    alert_background: css('.alert-secondary', 'backgroundColor'),
    badge_radius: css('.badge', 'borderRadius'),
    icon_font: before ? before.fontFamily : null,
    icon_width: icon ? icon.getBoundingClientRect().width : null,
    awesome_loaded: [...document.fonts].some(
      (f) => f.family.includes('Font Awesome') && f.status === 'loaded'),
    jquery: typeof window.jQuery,
    vega: [...document.querySelectorAll('div.vega')].map((d) => ({
      id: d.id,
      points: d.querySelectorAll('.mark-symbol path').length,
      lines: d.querySelectorAll('.mark-line path').length,
      titles: [...d.querySelectorAll('.role-axis-title text, .role-title-text text')]
        .map((t) => t.textContent)})),
    notes: [...document.querySelectorAll('.note')].map((n) => n.textContent),
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 500));
</script>"""


@pytest.fixture(scope="module")
def browser() -> str:
    """The headless browser; without one every test here skips (before the flow runs)."""
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    pytest.skip("no headless browser to render the HTML reports: install Debian's chromium "
                "package (apt-get install chromium; .ci/run does)")


def chromium(browser: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
               "--no-first-run", *OFFLINE, "--window-size=1400,1000",
               "--virtual-time-budget=20000", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def screenshot(browser: str, page: Path, out: Path) -> Path:
    done = chromium(browser, page, f"--screenshot={out}")
    assert out.is_file(), f"no screenshot of {page}: {done.stderr[-2000:]}"
    return out


def probe(browser: str, page: Path, tmp: Path, script: str = PROBE) -> dict:
    """What applied in ``page`` (a copy with ``script``, :data:`PROBE` unless told, before
    ``</body>``), via the DOM: the script writes its findings into ``<pre id=probe>``."""
    copy = tmp / f"probe-{page.name}"
    text = page.read_text(encoding="utf-8")
    end = text.rfind("</body>")  # the last: an inlined script may hold the string too
    copy.write_text(text[:end] + script + text[end:] if end >= 0 else text + script,
                    encoding="utf-8")
    done = chromium(browser, copy, "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run in {page}: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


#: The size each <img> of the page decoded to (0 for an image that did not load).
IMAGES_PROBE = """<script>
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({widths: [...document.images].map((i) => i.naturalWidth)});
  document.body.appendChild(pre);
});
</script>"""


def assert_not_blank(png: Path) -> None:
    """Fails on a white (or any one-colour) page: at least 0.5% of the pixels must differ from
    the background (a white page has none; a short page of text has a few percent)."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=image.width * image.height)
    drawn = image.width * image.height - max(count for count, _ in colours)
    assert drawn > 0.005 * image.width * image.height, \
        f"{png.name} is blank: {drawn} pixels differ from its background"
    assert len(colours) > 20, f"{png.name} has only {len(colours)} colours: a bare page"


def assert_offline(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert offline.external_assets(text) == [], f"{page} loads assets from the network"


@pytest.fixture(scope="module")
def project(browser, tmp_path_factory, params) -> Path:
    """One flow run on generated data (MLP only, so the learning curve has points), then
    ``python -m tabreg plots`` as ``make plots`` runs it."""
    from flows.training import training

    root = build_project(tmp_path_factory.mktemp("offline"), params, rows=2000, git=True,
                         tune={"families": ["mlp"], "blend": False, "n_trials": 2})
    stages = training(root=str(root))
    assert all(s["stage"] for s in stages)
    assert cli.run(["--root", str(root), "-q", "plots"]) == 0
    return root


def test_data_docs_of_the_run_open_offline(browser, project, tmp_path):
    folder = project / "reports/validation"
    for name in ("raw.html", "index.html"):
        assert_offline(folder / name)
        assert_not_blank(screenshot(browser, folder / name, tmp_path / f"{name}.png"))
    page = (folder / "raw.html").read_text(encoding="utf-8")
    assert "__none__" not in page and "data version " in page  # the run has a name and time
    assert 'href="index.html"' in page and "../index.html" not in page  # Home is the index
    seen = probe(browser, folder / "raw.html", tmp_path)
    assert seen["alert_background"] not in (None, "rgba(0, 0, 0, 0)"), seen  # Bootstrap applied
    assert seen["badge_radius"] not in (None, "0px"), seen
    assert "Font Awesome" in (seen["icon_font"] or "") and seen["awesome_loaded"], seen
    assert seen["icon_width"] and seen["icon_width"] > 4, seen  # the Status column shows icons
    assert seen["jquery"] == "function", seen  # "Show more info" and the filter buttons work
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert '<a href="raw.html">raw</a>' in index and "passed" in index


def test_failing_pairs_read_as_pairs(browser, tmp_path):
    frame = synthetic.generate(1200, seed=3)
    frame.loc[:2, "total_bedrooms"] = frame.loc[:2, "total_rooms"] + 5
    report = val.validate_frame(frame, ROOT / "expectations/raw.json", run_name="broken pairs")
    assert not report.success
    html = val.write_report(report, tmp_path, "raw")["html"]
    text = html.read_text(encoding="utf-8")
    rooms, bedrooms = frame.loc[0, "total_rooms"], frame.loc[0, "total_bedrooms"]
    assert f"total_rooms={rooms:g}, total_bedrooms={bedrooms:g}" in text
    assert f"<span>{rooms}</span><span>{bedrooms}</span>" not in text  # GX's 4123.04126.0
    assert "broken pairs" in text and "__none__" not in text
    assert_offline(html)
    assert_not_blank(screenshot(browser, html, tmp_path / "failing.png"))
    assert probe(browser, html, tmp_path)["awesome_loaded"]


def test_dvc_plots_page_opens_offline(browser, project, tmp_path):
    page = project / "reports/plots.html"
    assert_offline(page)
    assert_not_blank(screenshot(browser, page, tmp_path / "plots.png"))
    panels = {p["id"]: p for p in probe(browser, page, tmp_path)["vega"]}
    assert len(panels) == 2, panels  # learning curve and predictions, both drawn
    curve, scatter = sorted(panels.values(), key=lambda p: p["points"])
    assert curve["lines"] >= 1 and "validation RMSE ($)" in curve["titles"], curve
    assert scatter["points"] >= 300, scatter  # one point per test row (2000 rows, 20%)
    assert scatter["lines"] >= 1, scatter  # the line y = x
    assert {"actual ($)", "predicted ($)"} <= set(scatter["titles"]), scatter


def test_an_empty_learning_curve_says_why(browser, project, tmp_path):
    curve = project / "reports/learning_curve.json"
    kept = curve.read_text()
    trained = json.loads((project / "models/train.json").read_text())
    try:
        curve.write_text("[]")  # what a random forest or gradient boosting run writes
        assert cli.run(["--root", str(project), "-q", "plots"]) == 0
        seen = probe(browser, project / "reports/plots.html", tmp_path)
    finally:
        curve.write_text(kept)
    assert len(seen["vega"]) == 1, seen
    assert seen["notes"] == [f"No learning curve: the model trained in this run is "
                             f"{trained['family']}, and only an MLP trains in epochs (the "
                             "tuning history is in reports/tuning/)."], seen


def test_monitoring_report_opens_offline_with_its_figures(browser, tmp_path):
    from tabreg.monitoring import report
    from tests.unit.test_monitor_report import monitored

    page = report.write(*monitored(labelled=True), tmp_path / "monitor/report.html")
    assert_offline(page)
    assert_not_blank(screenshot(browser, page, tmp_path / "monitor.png"))
    widths = probe(browser, page, tmp_path, IMAGES_PROBE)["widths"]
    assert len(widths) == 5 and all(w > 0 for w in widths), widths  # every PNG decoded
