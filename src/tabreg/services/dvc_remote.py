"""The DVC remote the retrain flow pushes data versions to and other hosts pull from.

Added with ``dvc remote add --local``, so it goes to ``.dvc/config.local`` (git-ignored): a
machine path never lands in the shared ``.dvc/config``. Any DVC remote URL works (``s3://``,
``ssh://``, ...); a plain path is made absolute and created.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tabreg.errors import ServiceError

REMOTE_NAME = "services"


def resolve(remote: str, root: Path) -> str:
    """``remote`` as DVC should record it: URLs as given, paths absolute (from ``root``)."""
    if "://" in remote:
        return remote
    path = Path(remote).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def configure(root: Path, remote: str, name: str = REMOTE_NAME) -> str | None:
    """Make ``remote`` the default remote of the DVC repository at ``root`` (local config);
    None when ``root`` is not a DVC repository."""
    if not (root / ".dvc").is_dir():
        return None
    target = resolve(remote, root)
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "--local", "--default",
                           "--force", name, target], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServiceError(f"dvc remote add failed in {root}: "
                           f"{(done.stderr or done.stdout).strip()}")
    return target
