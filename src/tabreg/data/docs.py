"""Great Expectations' Data Docs page for one validation result, as a file that opens offline.

The project renders GX's validation page directly (no Data Docs site is built), so the page GX
writes assumes a site around it and the internet: CDN stylesheets and scripts (an unstyled page
with a blank Status column offline), an S3 logo, ``Home`` and suite links into a site that does
not exist. :func:`render` fixes each: the assets are inlined from pinned packages
(:mod:`tabreg.offline`), ``Home`` leads to the folder's ``index.html`` (:func:`index_page`, one
line per table judged), the run has a name and a time, the data asset is named, and the failing
values of a column pair read ``total_rooms=4123, total_bedrooms=4126`` instead of GX's
``4123.04126.0`` (it prints a list cell as adjacent spans).
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tabreg import offline

#: The pieces of GX's page that point into a Data Docs site or to the internet.
_CDN_STYLESHEET = re.compile(r"<link\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*>\s*", re.I)
_CDN_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>\s*", re.I)
_LOGO = re.compile(r"src=\"[^\"]*logo-long\.png[^\"]*\"")
_DARK_LOGO = re.compile(r"url\(['\"]?https?://[^)'\"]*full_logo_dark\.png['\"]?\)")  # dark mode
_FAVICON = re.compile(r"href=\"[^\"]*static/images/favicon\.ico\"")
_HOME = re.compile(r"href=\"(?:\.\./)*index\.html\"")
_SUITE_LINK = re.compile(r"<a href=\"(?:\.\./)*expectations/[^\"]*\"\s*>(.*?)</a>", re.S)


def run_id(run_name: str, when: datetime | None = None) -> dict[str, str]:
    """The run identity GX's page shows (it prints ``__none__`` for a result without one)."""
    when = when or datetime.now(UTC)
    return {"run_name": run_name, "run_time": when.isoformat(timespec="seconds")}


def render(result: Mapping[str, Any], name: str) -> str:
    """GX's validation page for ``result`` (GX's ``to_json_dict()``), self-contained.

    ``name`` is the table the result judged, shown as GX's data asset.
    """
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    validation = ExpectationSuiteValidationResult(**_result_kwargs(result, name))
    document = ValidationResultsPageRenderer().render(validation)
    return offline_page(DefaultJinjaPageView().render(document))


def offline_page(page: str) -> str:
    """GX's page with its CDN assets inlined, its images embedded and its site links fixed."""
    from great_expectations.render import view

    images = Path(view.__file__).parent / "static" / "images"
    styles = offline.style(offline.bootstrap_css()) + offline.style(offline.font_awesome_css())
    # Bootstrap comes where GX's first CDN stylesheet was, so GX's own styles still follow it.
    page = _CDN_STYLESHEET.sub(lambda _: "", page.replace(
        _first(_CDN_STYLESHEET, page), styles + "\n", 1))
    page = _CDN_SCRIPT.sub(lambda _: "", page.replace(
        _first(_CDN_SCRIPT, page), offline.script(offline.bootstrap_js()) + "\n", 1))
    logo = offline.data_uri(images / "logo-long.png")
    page = _LOGO.sub(lambda _: f'src="{logo}"', page)
    page = _DARK_LOGO.sub(lambda _: f"url('{logo}')", page)
    favicon = offline.data_uri(images / "favicon.ico", "image/x-icon")
    page = _FAVICON.sub(lambda _: f'href="{favicon}"', page)
    page = _HOME.sub('href="index.html"', page)
    page = _SUITE_LINK.sub(r"\1", page)
    left = offline.external_assets(page)
    if left:  # pragma: no cover - a GX upgrade added an asset this function does not know
        raise RuntimeError(f"Data Docs page still loads {left}: update tabreg.data.docs")
    return page


def _first(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    if found is None:  # pragma: no cover - a GX upgrade changed its page template
        raise RuntimeError(f"Data Docs page has no {pattern.pattern!r}: update tabreg.data.docs")
    return found.group(0)


def _result_kwargs(result: Mapping[str, Any], name: str) -> dict[str, Any]:
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    items = []
    for item in result.get("results", ()):
        config = dict(item.get("expectation_config") or {})
        kwargs = config.get("kwargs") or {}
        items.append(ExpectationValidationResult(
            success=item.get("success"),
            expectation_config=ExpectationConfiguration(
                type=str(config.get("type")), kwargs=kwargs,
                meta=config.get("meta"), severity=config.get("severity", "critical"),
            ),
            result=readable_values(item.get("result") or {}, kwargs),
            meta=item.get("meta") or {},
            exception_info=item.get("exception_info"),
        ))
    meta = dict(result.get("meta") or {})
    meta["batch_spec"] = {**(meta.get("batch_spec") or {}), "data_asset_name": name}
    return {
        "success": result.get("success"),
        "results": items,
        "suite_name": result.get("suite_name"),
        "suite_parameters": result.get("suite_parameters") or {},
        "statistics": result.get("statistics") or {},
        "meta": meta,
    }


def readable_values(result: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` with multi-column samples as one string each, for the page only.

    GX samples a failing row of a column pair as ``[a, b]`` and prints such a cell as adjacent
    spans (``4123.04126.0``); here it reads ``total_rooms=4123, total_bedrooms=4126``.
    """
    names = [kwargs[k] for k in ("column_A", "column_B") if kwargs.get(k) is not None]
    names = names or list(kwargs.get("column_list") or [])
    out = dict(result)
    for key in ("partial_unexpected_list", "unexpected_list"):
        if isinstance(out.get(key), list):
            out[key] = [_cell(v, names) for v in out[key]]
    if isinstance(out.get("partial_unexpected_counts"), list):
        out["partial_unexpected_counts"] = [
            {**c, "value": _cell(c.get("value"), names)} if isinstance(c, dict) else c
            for c in out["partial_unexpected_counts"]]
    return out


def _cell(value: Any, names: list[str]) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_number(v)}" for k, v in value.items())
    if not isinstance(value, (list, tuple)):
        return value
    if len(names) == len(value):
        return ", ".join(f"{n}={_number(v)}" for n, v in zip(names, value, strict=True))
    return "(" + ", ".join(_number(v) for v in value) + ")"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def index_page(tables: Mapping[str, Mapping[str, Any]], judged: Mapping[str, Any]) -> str:
    """The folder's ``index.html`` (the pages' ``Home``): one line per table and its verdict."""
    rows = []
    for key, table in tables.items():
        ok = bool(table.get("success"))
        badge = ('<span class="badge badge-success">passed</span>' if ok
                 else '<span class="badge badge-danger">failed</span>')
        rows.append(
            f'<tr><td><a href="{html_lib.escape(key)}.html">{html_lib.escape(key)}</a></td>'
            f"<td>{badge}</td><td>{table.get('evaluated', '')}</td>"
            f"<td>{table.get('failed', '')}</td></tr>")
    what = html_lib.escape(f"{judged.get('path', '')} (md5 {judged.get('md5', '')})")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data validation</title>
{offline.style(offline.bootstrap_css())}</head>
<body class="container py-4">
<h1 class="h3">Data validation</h1>
<p class="text-muted">Each table against its contract (Great Expectations); table judged: {what}.
Each page is a Great Expectations Data Docs page; the JSON beside it holds the full result.</p>
<table class="table table-sm table-bordered w-auto">
<thead class="thead-light"><tr><th>table</th><th>status</th><th>expectations</th>
<th>failed</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""
