"""Safe extraction of one member from a tarball (or reading a bare CSV).

Archives come from the network: every member is checked before anything is read, and an archive
holding absolute paths, ``..`` components, links or device files is refused outright rather than
partly extracted. Python's ``data`` extraction filter is applied as a second line of defence.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path, PurePosixPath

from tabreg.errors import ArchiveError
from tabreg.io import atomic_path


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")):
        return "absolute path"
    if ".." in name.parts:
        return "path traversal ('..')"
    if member.issym() or member.islnk():
        return f"link to {member.linkname!r}"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "device or special file"
    if not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive_name(name: str) -> bool:
    """Whether a source is a tarball, judged by its name (a damaged tarball is still one)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Extract ``member`` of ``archive`` to ``dest`` (atomically) after vetting every member."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for item in members:
                reason = _unsafe_reason(item)
                if reason:
                    raise ArchiveError(
                        f"{archive.name}: unsafe member {item.name!r} ({reason}); "
                        "refusing to extract anything from this archive"
                    )
            found = next((m for m in members if m.name == member and m.isfile()), None)
            if found is None:
                files = [m.name for m in members if m.isfile()][:10]
                raise ArchiveError(
                    f"{archive.name}: no member {member!r} (data.member in params.yaml); "
                    f"the archive holds {files or 'no files'}"
                )
            try:  # the standard library's own verdict, in case ours missed a case
                tarfile.data_filter(found, str(dest.parent))
            except tarfile.FilterError as exc:
                raise ArchiveError(f"{archive.name}: unsafe member {member!r} ({exc})") from None
            with atomic_path(dest) as tmp:
                source = tar.extractfile(found)
                if source is None:
                    raise ArchiveError(f"{archive.name}: member {member!r} cannot be read")
                with source, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive.name}: archive is truncated or corrupt ({exc})") from None
    return dest
