"""Fetching the data source and verifying its checksum.

The source is an ``http(s)://`` URL, a ``file://`` URL or a plain path; all three are the same
data when their sha256 matches the one in ``params.yaml``, which is checked before anything is
extracted. Downloads land in a cache folder named by checksum, so a rerun never downloads again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tabreg.errors import SourceError
from tabreg.io import atomic_path

OVERRIDE_HINT = (
    "set data.source in params.yaml or the DATA_SOURCE environment variable "
    "to a reachable URL, a file:// URL or a local path"
)


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks (a source may not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _local_path(source: str, root: Path) -> Path:
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    else:
        path = Path(source).expanduser()
    return path if path.is_absolute() else root / path


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        with (urllib.request.urlopen(url, timeout=timeout) as response,
              atomic_path(dest) as tmp, open(tmp, "wb") as out):
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot download {url}: {reason}; {OVERRIDE_HINT}") from None


def fetch(source: str, sha256: str, *, root: Path, cache_dir: Path, timeout: float = 60.0) -> Path:
    """Return a local file holding ``source``, verified against ``sha256``.

    Remote sources are downloaded once into ``cache_dir``; local ones are used in place.
    """
    scheme = urllib.parse.urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        name = Path(urllib.parse.urlparse(source).path).name or "download"
        path = cache_dir / sha256[:16] / name
        if not (path.exists() and sha256_of(path) == sha256):
            _download(source, path, timeout)
    elif scheme in ("", "file") or len(scheme) == 1:  # one letter: a Windows drive
        path = _local_path(source, root)
        if not path.is_file():
            raise SourceError(f"data source {source} not found (looked at {path}); {OVERRIDE_HINT}")
    else:
        raise SourceError(f"data source {source}: unsupported scheme {scheme!r}; {OVERRIDE_HINT}")
    actual = sha256_of(path)
    if actual != sha256:
        raise SourceError(
            f"checksum mismatch for {source}: expected sha256 {sha256}, got {actual}. "
            "The file is not the one params.yaml pins (data.sha256): nothing was extracted. "
            "If the new file is intended, update data.sha256."
        )
    return path
