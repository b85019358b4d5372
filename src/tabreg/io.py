"""Atomic file output.

Every file a step writes goes through here: the content is written to a temporary file in the
destination's folder and renamed over the destination only once complete, so a failing or
killed step never leaves a half-written table and never destroys the previous good output.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; a fresh name created by the writer
    # gets the usual umask-based mode. The name carries the writer's pid, so that the file a
    # killed writer leaves can be told from one being written (``tabreg.store.recovery``).
    tmp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.{os.getpid()}.tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _write(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a table as Parquet (types kept, byte-identical for identical frames)."""
    return _write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, atomically (see the module docstring)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` (UTF-8), atomically."""
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_md5(path: str | os.PathLike[str]) -> str:
    """The md5 of a file's bytes, as DVC computes it for a file output: names a table's
    version, so a result can say which table it judged."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a table written by :func:`write_table`, with a clear error if it is missing."""
    from tabreg.errors import SchemaError

    path = Path(path)
    if not path.exists():
        raise SchemaError(f"{path}: table not found; run the step that writes it first")
    return pd.read_parquet(path)
