"""HTML reports that open offline, as plain files: what a page needs is inside the page.

Great Expectations' Data Docs and DVC's plots page load Bootstrap, jQuery, Font Awesome and
Vega from CDNs, so on a machine without internet they render as a white or unstyled page. The
project's HTML reports inline those assets instead, read from pinned packages in
``requirements.lock`` (``XStatic-Bootstrap``, ``XStatic-jQuery``, ``XStatic-Font-Awesome``,
``vl-convert-python`` for the Vega bundle): nothing is vendored into the repository and nothing
is fetched when a page opens. Everything is inlined (fonts as ``data:`` URIs too), because a
browser refuses web fonts from a neighbouring ``file://`` path, and a single file can be copied,
attached or logged as it is. :func:`external_assets` lets writers and tests prove a page asks
for nothing from elsewhere.
"""

from __future__ import annotations

import base64
import functools
import mimetypes
import re
from pathlib import Path

#: Vega-Lite major version of DVC's templates (``$schema: .../vega-lite/v5.json``).
VEGA_LITE = "5.21"

#: A tag that makes the browser fetch a URL when the page opens (scripts, styles, images,
#: icons, frames), and CSS ``url(...)``/``@import`` of a remote or protocol-relative URL.
_FETCHING_TAG = re.compile(
    r"<(?:script|link|img|iframe|source|embed)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?"
    r"((?:https?:)?//[^\"'\s>]+)", re.IGNORECASE)
_CSS_URL = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])((?:https?:)?//[^\"')\s]+)",
                      re.IGNORECASE)


def external_assets(html: str) -> list[str]:
    """The URLs the page would fetch when opened (links a reader may follow are not counted)."""
    return _FETCHING_TAG.findall(html) + _CSS_URL.findall(html)


def data_uri(path: str | Path, mime: str | None = None) -> str:
    """``path`` as a ``data:`` URI (base64)."""
    mime = mime or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def style(css: str) -> str:
    """An inline stylesheet; ``</style`` inside it would end the tag early, so it is escaped."""
    return "<style>\n" + css.replace("</style", "<\\/style") + "\n</style>"


def script(js: str) -> str:
    """An inline script; ``</script`` inside it would end the tag early, so it is escaped."""
    return "<script>\n" + js.replace("</script", "<\\/script") + "\n</script>"


# --------------------------------------------------------------------------------------------
# Assets from pinned packages (imported when a page is written, never at module import)


def _xstatic_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(f"xstatic.pkg.{name}").BASE_DIR)


@functools.cache
def bootstrap_css() -> str:
    """Bootstrap 4 (Data Docs is written for Bootstrap 4.3; 4.5 keeps its classes)."""
    return (_xstatic_dir("bootstrap") / "css/bootstrap.min.css").read_text(encoding="utf-8")


@functools.cache
def bootstrap_js() -> str:
    """jQuery and Bootstrap's plugins: Data Docs' collapsible details and its filter buttons."""
    jquery = (_xstatic_dir("jquery") / "jquery.min.js").read_text(encoding="utf-8")
    plugins = (_xstatic_dir("bootstrap") / "js/bootstrap.bundle.min.js").read_text(
        encoding="utf-8")
    return jquery + "\n" + plugins


@functools.cache
def font_awesome_css() -> str:
    """Font Awesome's classes and its solid face (the status icons), the font inlined."""
    base = _xstatic_dir("font_awesome")
    solid = (base / "css/solid.min.css").read_text(encoding="utf-8")
    font = data_uri(base / "webfonts/fa-solid-900.woff2", "font/woff2")
    solid, n = re.subn(r"src:url\([^)]*fa-solid-900\.woff2\)[^;}]*", f"src:url({font}) "
                       'format("woff2")', solid)
    if n != 1:  # pragma: no cover - a package upgrade changed the stylesheet
        raise RuntimeError("Font Awesome's solid.min.css has no fa-solid-900.woff2 source")
    return (base / "css/fontawesome.min.css").read_text(encoding="utf-8") + "\n" + solid


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script (``vegaEmbed`` global), no network."""
    import vl_convert

    # The default snippet (the stub marks it required; the library makes it optional) sets
    # the vegaEmbed, vegaLite and vega globals the page uses.
    return vl_convert.javascript_bundle(vl_version=VEGA_LITE)  # type: ignore[call-arg]
