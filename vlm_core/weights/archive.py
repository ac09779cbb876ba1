"""Safe extraction of archives (zip, tar, tar.gz/bz2/xz): weights, bundles, uploaded datasets.

What is refused (one bad member refuses the whole archive):

- member names that are absolute, hold a ``..`` component or a NUL; symbolic or hard links
  that point outside the destination (zip symlinks altogether: zipfile cannot extract them as
  links); device files and FIFOs; encrypted zip members; zip members compressed with anything
  but stored or deflate (zipfile inflates bzip2 and LZMA members without an output limit, so
  one read could fill the memory);
- archives whose files add up to more than ``max_bytes`` (by default the smaller of 4 GiB and
  half the free space where they are extracted);
- members that expand more than ``max_ratio`` times (200 by default) once they are over
  1 MiB: a zip member against the bytes it occupies in the archive, a tar's files together
  against the archive file (the compression of a ``.tar.gz`` covers the whole stream).

Sizes are checked twice. The headers are read first (a zip's central directory at once, a
tar's headers as they come) and an archive whose declared sizes break a cap is refused before
its data is read. While extracting, the bytes actually written are counted: a member is
written only up to the size its header declares and must come out at exactly that size, so an
archive whose headers lie is refused too.

Everything is extracted into a hidden temporary folder beside the destination (inside it when
it already exists) and moved into place only when every member came out whole; on any error
the temporary folder is removed and the destination is as it was. Tar members also pass
Python's ``data`` filter as a second line of defence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vlm_core.fileio import file_mode
from vlm_core.weights.errors import WeightsError

log = logging.getLogger(__name__)

#: The most the files of one archive may add up to by default, in bytes (4 GiB); the default
#: is lower when the destination's file system has less than twice that free.
MAX_ARCHIVE_BYTES = 4 * 1024**3
#: The most a member may expand: its size over the bytes it occupies in the archive.
MAX_RATIO = 200.0
#: Members (for a tar: all files together) up to this size are never refused for their ratio,
#: so that small, very compressible files (configs, empty masks) pass.
RATIO_FLOOR_BYTES = 1024**2
_CHUNK = 1024**2
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


class _Refused(Exception):
    """A member breaks a rule (internal; becomes a WeightsError naming the archive)."""

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(problem)
        self.member = member
        self.problem = problem


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    max_ratio: float
    why: str  # where max_bytes comes from, for the message


def default_max_bytes(dest: Path) -> int:
    """The default cap for extracting into ``dest``: 4 GiB or half the free space of the file
    system that holds it (its nearest existing folder), whichever is smaller."""
    return min(MAX_ARCHIVE_BYTES, _free_bytes(dest) // 2)


def _free_bytes(dest: Path) -> int:
    existing = Path(dest).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


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


def _ratio_problem(size: int, packed: int, limits: _Limits) -> str | None:
    if size > RATIO_FLOOR_BYTES and size > limits.max_ratio * max(packed, 1):
        return (
            f"an expansion of {size} bytes from {packed}, more than {limits.max_ratio:g} times "
            "(a decompression bomb?)"
        )
    return None


def _total_problem(total: int, limits: _Limits) -> str | None:
    if total > limits.max_bytes:
        return f"a total size of {total} bytes > {limits.max_bytes} ({limits.why})"
    return None


def _is_tar(archive: Path) -> bool:
    name = archive.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return True
    if name.endswith(".zip"):
        return False
    return tarfile.is_tarfile(archive) and not zipfile.is_zipfile(archive)


def _target(root: Path, name: str) -> Path:
    """Where member ``name`` goes under ``root``, refusing a path that leaves it through a link
    extracted earlier."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    target = root.joinpath(*parts) if parts else root
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(target.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise _Refused(name, "a path that leads outside the destination through a link")
    return target


def _write_member(src: IO[bytes], target: Path, name: str, size: int, budget: int) -> int:
    """Copy ``src`` to ``target``, at most ``size`` bytes (the header's) and at most ``budget``
    (what the total cap leaves); return the bytes written, which must equal ``size``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()  # a duplicate member replaces the file, never writes through a link
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    written = 0
    with os.fdopen(os.open(target, flags, file_mode()), "wb") as out:
        while block := src.read(_CHUNK):
            written += len(block)
            if written > size:
                raise _Refused(name, f"more data than the {size} bytes its header declares")
            if written > budget:
                raise _Refused(name, "data beyond the archive's size cap")
            out.write(block)
    if written != size:
        raise _Refused(name, f"{written} bytes of data where its header declares {size}")
    return written


# -- zip ------------------------------------------------------------------------------------


def _check_zip(zf: zipfile.ZipFile, archive_size: int, limits: _Limits) -> None:
    """Check every member of the central directory before anything is read or written."""
    infos = zf.infolist()
    ends = sorted({i.header_offset for i in infos} | {zf.start_dir, archive_size})
    total = 0
    for info in infos:
        name = info.filename
        problem = _name_problem(name)
        if problem is None and stat.S_ISLNK(info.external_attr >> 16):
            problem = "a symlink (zip symlinks are not extracted)"
        if problem is None and info.flag_bits & 0x1:
            problem = "encryption"
        if problem is None and not info.is_dir() and info.compress_type not in _ZIP_METHODS:
            problem = (
                f"compression method {info.compress_type} (vlm extracts stored and deflate "
                "zip members; re-pack it, or as a .tar.gz/.tar.xz)"
            )
        if problem is None:
            # the bytes the member really occupies: up to the next header or the directory
            span = next(e for e in ends if e > info.header_offset) - info.header_offset
            problem = _ratio_problem(info.file_size, min(info.compress_size, span), limits)
        if problem:
            raise _Refused(name, problem)
        total += info.file_size
        if problem := _total_problem(total, limits):
            raise _Refused(name, problem)


def _extract_zip(zf: zipfile.ZipFile, root: Path, limits: _Limits) -> list[Path]:
    files: list[Path] = []
    written = 0
    for info in zf.infolist():
        target = _target(root, info.filename)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        with zf.open(info) as src:
            written += _write_member(
                src, target, info.filename, info.file_size, limits.max_bytes - written
            )
        files.append(target)
    return files


# -- tar ------------------------------------------------------------------------------------


def _tar_member_problem(m: tarfile.TarInfo) -> str | None:
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
    return problem


def _extract_tar(tf: tarfile.TarFile, root: Path, archive_size: int, limits: _Limits) -> list[Path]:
    """Check each header as it comes, then write its member; one pass over the stream."""
    files: list[Path] = []
    declared = written = 0
    last = "(none)"
    while (m := tf.next()) is not None:
        problem = _tar_member_problem(m)
        if problem is None and m.isreg():
            declared += m.size
            problem = _total_problem(declared, limits) or _ratio_problem(
                declared, archive_size, limits
            )
        if problem is None:
            try:
                tarfile.data_filter(m, str(root))
            except tarfile.FilterError as exc:
                problem = f"a path the tar 'data' filter refuses ({exc})"
        if problem:
            raise _Refused(m.name, problem)
        target = _target(root, m.name)
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif m.isreg():
            src = tf.extractfile(m)
            assert src is not None  # a regular member always has a file object
            with src:
                written += _write_member(src, target, m.name, m.size, limits.max_bytes - written)
            files.append(target)
        else:  # a link checked above: tarfile makes it, under the data filter
            tf.extract(m, root, set_attrs=False, filter="data")
        last = m.name
    _check_tar_end(tf, last)
    return files


def _check_tar_end(tf: tarfile.TarFile, last: str) -> None:
    """tarfile ends quietly at a damaged header; refuse an archive that does not end in zeros."""
    assert tf.fileobj is not None
    tf.fileobj.seek(tf.offset)
    block = tf.fileobj.read(tarfile.BLOCKSIZE)
    if block.strip(b"\0"):
        raise _Refused(last, "a damaged header after it (the rest of the archive is unreadable)")


# -- the entry point ------------------------------------------------------------------------


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A hidden temporary folder on ``dest``'s file system, removed on the way out (with the
    parent folders this created, when they are still empty)."""
    created: list[Path] = []
    anchor = dest if dest.is_dir() else dest.parent
    missing = anchor
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    anchor.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=anchor))
    mode = file_mode()
    staging.chmod(mode | (mode & 0o444) >> 2)  # what mkdir gives (mkdtemp's is owner-only)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not dest.exists():
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _move_into_place(staging: Path, dest: Path) -> None:
    """Rename the staged tree to ``dest``, or its entries into an existing ``dest``, refusing
    to replace anything already there."""
    if not dest.exists():
        os.rename(staging, dest)
        return
    entries = sorted(staging.iterdir())
    clash = next((e.name for e in entries if (dest / e.name).exists()), None)
    if clash is not None:
        raise _Refused(clash, f"a name that already exists in {dest}; extract into a new folder")
    moved: list[Path] = []
    try:
        for entry in entries:
            os.rename(entry, dest / entry.name)
            moved.append(dest / entry.name)
    except OSError:
        for done in moved:  # put back what moved, so that dest is as it was
            with contextlib.suppress(OSError):
                os.rename(done, staging / done.name)
        raise


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int | None = None,
    max_ratio: float = MAX_RATIO,
) -> list[Path]:
    """Extract ``archive`` into ``dest``, all or nothing, after checking every member.

    Args:
        archive: a ``.zip`` or a tar archive (plain or gzip/bzip2/xz-compressed).
        dest: the folder to extract into: created when missing; when it exists, nothing in it
            is replaced (a member whose top-level name is already there refuses the archive).
        max_bytes: the most the extracted files may add up to, in bytes. None: the smaller of
            4 GiB and half the free space of ``dest``'s file system (:func:`default_max_bytes`).
        max_ratio: the most a member over 1 MiB may expand (zip: per member; tar: all files
            together against the archive's size). Default 200.

    Returns:
        The extracted regular files, sorted.

    Raises:
        WeightsError: a member is unsafe (see the module docstring), a cap is exceeded, a
            header lies about its member's size, or the archive is unreadable, truncated or
            corrupt; the destination is left as it was in every case.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise WeightsError(f"no such archive: {archive}", filename=archive.name)
    if max_bytes is None:
        limits = _Limits(
            default_max_bytes(dest),
            max_ratio,
            f"the default cap: {MAX_ARCHIVE_BYTES // 1024**3} GiB or half the free space "
            f"at {dest}, whichever is smaller",
        )
    else:
        limits = _Limits(max_bytes, max_ratio, "the cap asked for")
    size = archive.stat().st_size
    try:
        with _staging(dest) as staging:
            if _is_tar(archive):
                with tarfile.open(archive) as tf:
                    files = _extract_tar(tf, staging, size, limits)
            elif zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    _check_zip(zf, size, limits)
                    files = _extract_zip(zf, staging, limits)
            else:
                raise WeightsError(
                    f"{archive} is neither a zip nor a tar archive", filename=archive.name
                )
            _move_into_place(staging, dest)
    except _Refused as exc:
        raise WeightsError(
            f"refusing to extract {archive}: member '{exc.member}' has {exc.problem}; "
            "nothing was extracted",
            filename=archive.name,
            hint="the archive is malformed or malicious; get it from its publisher again",
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WeightsError(
            f"cannot extract {archive}: {reason}; nothing was extracted",
            filename=archive.name,
            hint="the archive is truncated or corrupt; get it again",
        ) from None
    extracted = sorted(dest / f.relative_to(staging) for f in files)
    log.info("extracted %d files from %s into %s", len(extracted), archive, dest)
    return extracted
