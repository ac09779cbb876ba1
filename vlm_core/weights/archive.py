"""Safe extraction of weight archives (zip, tar, tar.gz/bz2/xz).

Every member is checked before anything is written; one bad member refuses the whole archive.
Refused: absolute paths, ``..`` path components, symbolic or hard links that point outside
the destination (zip symlinks altogether: zipfile cannot extract them as links), device files
and FIFOs, and archives whose files add up to more than ``max_bytes``. Tar archives are then
extracted with Python's ``data`` filter as a second line of defence.
"""

from __future__ import annotations

import logging
import posixpath
import re
import stat
import tarfile
import zipfile
from pathlib import Path

from vlm_core.weights.errors import WeightsError

log = logging.getLogger(__name__)

#: Default cap on the total size of the files in one archive, in bytes (64 GiB).
MAX_ARCHIVE_BYTES = 64 * 1024**3
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _name_problem(name: str) -> str | None:
    """Why an archive member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "an empty or NUL-containing name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]+", name):
        return "a '..' path component"
    return None


def _link_problem(member: str, target: str) -> str | None:
    """Why a symbolic link ``member -> target`` is unsafe, or None."""
    if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        return f"a symlink to the absolute path '{target}'"
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
    if joined == ".." or joined.startswith("../"):
        return f"a symlink to '{target}', outside the destination"
    return None


def _refuse(archive: Path, member: str, problem: str) -> WeightsError:
    return WeightsError(
        f"refusing to extract {archive}: member '{member}' has {problem}; nothing was extracted",
        filename=archive.name,
        hint="the archive is malformed or malicious; get it from its publisher again",
    )


def _is_tar(archive: Path) -> bool:
    name = archive.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return True
    if name.endswith(".zip"):
        return False
    return tarfile.is_tarfile(archive) and not zipfile.is_zipfile(archive)


def _check_tar(archive: Path, members: list[tarfile.TarInfo], max_bytes: int) -> None:
    total = 0
    for m in members:
        problem = _name_problem(m.name)
        if problem is None and m.issym():
            problem = _link_problem(m.name, m.linkname)
        elif problem is None and m.islnk():
            link = _name_problem(m.linkname)
            problem = f"a hard link to '{m.linkname}' ({link})" if link else None
        elif problem is None and (m.isdev() or m.isfifo()):
            problem = "a device file or FIFO type"
        elif problem is None and not (m.isreg() or m.isdir()):
            problem = f"an unsupported member type ({m.type!r})"
        if problem:
            raise _refuse(archive, m.name, problem)
        total += m.size if m.isreg() else 0
    if total > max_bytes:
        raise _refuse(archive, members[-1].name, f"a total size of {total} bytes > {max_bytes}")


def _check_zip(archive: Path, infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    total = 0
    for info in infos:
        problem = _name_problem(info.filename)
        if problem is None and stat.S_ISLNK(info.external_attr >> 16):
            problem = "a symlink (zip symlinks are not extracted)"
        if problem is None and info.flag_bits & 0x1:
            problem = "encryption"
        if problem:
            raise _refuse(archive, info.filename, problem)
        total += info.file_size
    if total > max_bytes:
        raise _refuse(archive, infos[-1].filename, f"a total size of {total} bytes > {max_bytes}")


def safe_extract(archive: Path, dest: Path, *, max_bytes: int = MAX_ARCHIVE_BYTES) -> list[Path]:
    """Extract ``archive`` into ``dest`` after checking every member.

    Args:
        archive: a ``.zip`` or a tar archive (plain or gzip/bzip2/xz-compressed).
        dest: the folder to extract into (created when missing).
        max_bytes: the largest total size of the extracted files, in bytes (default 64 GiB).

    Returns:
        The extracted regular files, sorted.

    Raises:
        WeightsError: a member is unsafe (see the module docstring) or the archive is
            unreadable; nothing has been written in either case.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise WeightsError(f"no such archive: {archive}", filename=archive.name)
    try:
        if _is_tar(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _check_tar(archive, members, max_bytes)
                dest.mkdir(parents=True, exist_ok=True)
                tf.extractall(dest, members=members, filter="data")
                files = [dest / m.name for m in members if m.isreg()]
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                _check_zip(archive, infos, max_bytes)
                dest.mkdir(parents=True, exist_ok=True)
                files = [Path(zf.extract(i, dest)) for i in infos if not i.is_dir()]
        else:
            raise WeightsError(
                f"{archive} is neither a zip nor a tar archive", filename=archive.name
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsError(
            f"cannot extract {archive}: {exc}",
            filename=archive.name,
            hint="the archive is truncated or corrupt; get it again",
        ) from None
    log.info("extracted %d files from %s into %s", len(files), archive, dest)
    return sorted(files)
