"""Checksummed downloads, safe all-or-nothing archive extraction, and a lock for preparing data in several processes.

Nothing half-written is ever left where a later run would trust it, and several processes preparing the same data
at once (Lightning calls ``prepare_data`` once per node; on shared storage several nodes do it together) neither
crash nor damage each other's work:

- :func:`download_file` streams to a ``<dest>.<pid>-<random>.part`` file of its own (with a tqdm progress bar and a
  short socket timeout, so a machine without network fails within seconds), checks the length and, when one is
  given, the SHA-256, and only then renames the file to ``dest``. Any failure removes the partial file; a killed
  run leaves one, which :func:`find_stale_downloads` lists.
- :func:`verify_sha256` checks a file's SHA-256 and, unless asked to remove it, keeps a file that does not match:
  a file the user placed by hand is never deleted because of a mistyped checksum.
- :func:`safe_extract` validates every member of a zip or tar archive before writing anything: absolute paths,
  drive letters, ``..`` components, links pointing outside the destination (and, in zip files, any symbolic link,
  which :mod:`zipfile` would write as a text file) and device files are rejected with :class:`UnsafeArchiveError`;
  encrypted zip members, a member that is a file where others need a folder of the same name, and archives that
  would expand beyond ``max_extracted_bytes`` (default: 100 times the archive's size, at least 64 GiB) are
  rejected with :class:`ArchiveError`.
- :func:`extract_archive_atomically` extracts into a hidden staging folder next to the destination, lets the caller
  verify the result, and moves it into place with one ``os.replace``; a killed run leaves at most a
  ``.<name>.*.partial`` folder, which no loader looks at (:func:`find_stale_staging` lists them). When another
  process publishes the destination first, its result is used.
- :func:`preparation_lock` holds an exclusive :func:`fcntl.flock` lock on ``<target>.lock`` while a process prepares
  ``target``: one process downloads, extracts or fills a cache; the others wait, then find the result in place.
  The lock is released by the kernel when its holder exits, however it exits, so a killed run never leaves a lock
  that blocks the next one (the empty ``.lock`` file stays; it can be deleted when no process is preparing).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import http.client
import logging
import os
import re
import secrets
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15.0
"""Seconds a connection attempt or a single read may block before the download is abandoned."""

STAGING_SUFFIX = ".partial"
DOWNLOAD_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"

MAX_EXPANSION_RATIO = 100
"""Default bound of an extraction, as a multiple of the archive's size (see :func:`safe_extract`)."""

MIN_EXTRACTION_LIMIT = 64 * 1024**3
"""Smallest default bound of an extraction in bytes (64 GiB), so that small archives of data that compresses well
(DICOM, masks) are not refused."""

_CHUNK = 1 << 20
_USER_AGENT = "anomalib-medical (https://pypi.org/project/anomalib-medical)"
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_ZIP_ENCRYPTED = 0x1
"""Bit 0 of a zip member's general purpose flags: the member is encrypted."""


class DownloadError(RuntimeError):
    """A download failed (no network, HTTP error, timeout, incomplete transfer)."""


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the expected value."""


class ArchiveError(ValueError):
    """A file is not a readable zip or tar archive."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the destination, or is a link or device."""


def normalise_sha256(sha256: str) -> str:
    """Return a SHA-256 hex digest in lower case, checking its form.

    Args:
        sha256: 64 hexadecimal characters (case-insensitive, surrounding blanks ignored).

    Returns:
        The digest in lower case.

    Raises:
        ValueError: If ``sha256`` is not 64 hexadecimal characters.

    """
    digest = sha256.strip().lower()
    if not _SHA256_PATTERN.match(digest):
        msg = f"sha256 must be 64 hexadecimal characters, got {sha256!r}."
        raise ValueError(msg)
    return digest


def sha256sum(path: str | Path) -> str:
    """Compute the SHA-256 of a file.

    Args:
        path: File to hash.

    Returns:
        The hex digest in lower case.

    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, remove_on_mismatch: bool = False) -> None:
    """Check a file's SHA-256.

    Args:
        path: File to check.
        expected: Expected hex digest.
        remove_on_mismatch: Delete the file on a mismatch, so that no later run trusts it. Only for files this
            package downloaded itself: a file placed by hand is kept (the default), since the expected digest may
            be the mistake.

    Raises:
        ChecksumError: If the digest differs; the message names the file, both digests and whether the file was
            removed.
        ValueError: If ``expected`` is not a SHA-256 hex digest.

    """
    path = Path(path)
    expected = normalise_sha256(expected)
    actual = sha256sum(path)
    if actual != expected:
        if remove_on_mismatch:
            path.unlink(missing_ok=True)
        fate = "it has been removed" if remove_on_mismatch else "it was kept"
        msg = f"SHA-256 of {path} is {actual}, expected {expected}; {fate}."
        raise ChecksumError(msg)


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download ``url`` (``http``, ``https`` or ``file``) to ``dest`` through a ``.part`` file of this call's own.

    The data is written to ``<dest>.<pid>-<random>.part``; the transfer length (when the server announces one) and
    the SHA-256 (when given) are checked before the file is renamed to ``dest`` with ``os.replace``. On any failure
    the ``.part`` file is removed. Several processes may download to the same ``dest`` at once: each writes its own
    ``.part`` file and the last complete one is renamed into place (use :func:`preparation_lock` to download once).

    Args:
        url: Source URL.
        dest: Destination file; its folder is created if needed; an existing file is replaced.
        sha256: Expected SHA-256 hex digest, or ``None`` to skip the check.
        timeout: Seconds a connection or read may block before giving up.
        progress: Show a tqdm progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: If the URL cannot be reached, answers with an error, times out or ends early.
        ChecksumError: If the downloaded data does not match ``sha256``.

    """
    dest = Path(dest)
    expected = normalise_sha256(sha256) if sha256 is not None else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}-{secrets.token_hex(4)}{DOWNLOAD_SUFFIX}")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as handle:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"Downloading {dest.name}",
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            msg = f"Download of {url} ended after {received} of {total} bytes."
            raise DownloadError(msg)
        if expected is not None and digest.hexdigest() != expected:
            msg = (
                f"SHA-256 of the data downloaded from {url} is {digest.hexdigest()}, expected {expected}; "
                f"the download has been discarded."
            )
            raise ChecksumError(msg)
        os.replace(part, dest)
    except urllib.error.HTTPError as err:
        msg = f"Download of {url} failed: HTTP {err.code} {err.reason}."
        raise DownloadError(msg) from err
    except urllib.error.URLError as err:
        msg = f"Cannot reach {url}: {err.reason}."
        raise DownloadError(msg) from err
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        msg = f"Download of {url} failed after {received} bytes: {err or type(err).__name__} (timeout {timeout} s)."
        raise DownloadError(msg) from err
    finally:
        part.unlink(missing_ok=True)
    return dest


def _member_problem(name: str) -> str | None:
    """Return why an archive member name is unsafe, or ``None`` when it is a plain relative path."""
    if "\x00" in name:
        return "contains a NUL character"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "contains a '..' component"
    return None


def _link_escapes(member_name: str, target: str, relative_to_member: bool) -> bool:
    """Whether a link target leaves the extraction folder."""
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        return True
    base = PurePosixPath(member_name.replace("\\", "/")).parent if relative_to_member else PurePosixPath()
    depth = 0
    for part in [*base.parts, *PurePosixPath(target).parts]:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in {".", ""}:
            depth += 1
    return False


def _zip_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """Validate and return the members of a zip archive."""
    members = archive.infolist()
    for info in members:
        problem = _member_problem(info.filename)
        if problem is None and stat.S_ISLNK(info.external_attr >> 16):
            target = archive.read(info).decode("utf-8", errors="replace")
            problem = (
                f"is a symbolic link pointing outside the archive ({target})"
                if _link_escapes(info.filename, target, relative_to_member=True)
                else f"is a symbolic link ({target}); links in zip archives are not supported"
            )
        if problem is not None:
            msg = f"Unsafe member {info.filename!r} in {path}: it {problem}. Nothing was extracted."
            raise UnsafeArchiveError(msg)
    return members


def _check_encryption(members: list[zipfile.ZipInfo], path: Path) -> None:
    """Reject encrypted zip members, which :mod:`zipfile` cannot extract without their password."""
    for info in members:
        if info.flag_bits & _ZIP_ENCRYPTED:
            msg = (
                f"Member {info.filename!r} of {path} is encrypted and cannot be extracted without its password. "
                "Nothing was extracted; extract the archive with a tool that asks for the password and place the "
                "extracted folder by hand."
            )
            raise ArchiveError(msg)


def _check_plan(members: list[tuple[str, bool, int]], path: Path, max_extracted_bytes: int | None) -> None:
    """Check what the members would write: their total size against the bound, and no file where a folder is needed.

    Args:
        members: ``(name, is_folder, size in bytes)`` of each member to extract.
        path: The archive (for the messages and the default bound).
        max_extracted_bytes: Bound on the total size; ``None`` for the default of :func:`safe_extract`.

    """
    archive_size = path.stat().st_size
    limit = (
        max(MAX_EXPANSION_RATIO * archive_size, MIN_EXTRACTION_LIMIT)
        if max_extracted_bytes is None
        else max_extracted_bytes
    )
    total = sum(size for _, _, size in members)
    if total > limit:
        msg = (
            f"Archive {path} would expand to {total:,} bytes ({total / max(archive_size, 1):,.0f} times its size of "
            f"{archive_size:,} bytes), more than the limit of {limit:,} bytes. Nothing was extracted; pass a larger "
            "max_extracted_bytes if the archive is trusted."
        )
        raise ArchiveError(msg)
    files: dict[PurePosixPath, str] = {}
    folders: dict[PurePosixPath, str] = {}
    for name, is_folder, _ in members:
        member = PurePosixPath(name.replace("\\", "/"))
        for parent in member.parents[:-1]:  # every folder above the member, without the final "."
            folders.setdefault(parent, name)
        (folders if is_folder else files).setdefault(member, name)
    for member, name in files.items():
        if member in folders:
            msg = (
                f"Member {name!r} of {path} is a file, but member {folders[member]!r} needs a folder of that name. "
                "Nothing was extracted."
            )
            raise ArchiveError(msg)


def _tar_members(archive: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """Validate and return the members of a tar archive."""
    members = archive.getmembers()
    for member in members:
        problem = _member_problem(member.name)
        if problem is None and member.issym() and _link_escapes(member.name, member.linkname, True):
            problem = f"is a symbolic link pointing outside the archive ({member.linkname})"
        if problem is None and member.islnk() and _link_escapes(member.name, member.linkname, False):
            problem = f"is a hard link pointing outside the archive ({member.linkname})"
        if problem is None and not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            problem = "is a device, FIFO or other special file"
        if problem is not None:
            msg = f"Unsafe member {member.name!r} in {path}: it {problem}. Nothing was extracted."
            raise UnsafeArchiveError(msg)
    return members


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    exclude: Callable[[str], bool] | None = None,
    progress: bool = True,
    max_extracted_bytes: int | None = None,
) -> list[str]:
    """Extract a zip or tar archive (any compression tar supports) into ``dest`` after validating every member.

    Before anything is written, every member's name and type is checked (see the module docstring), and the
    members to extract are checked together: none may be encrypted (zip), none may be a file where another member
    needs a folder (``a`` and ``a/b``), and their sizes may not add up to more than ``max_extracted_bytes``. The
    sizes are those the archive declares; :mod:`zipfile` and :mod:`tarfile` never write more than that, so the
    bound holds for archives crafted to expand enormously ("zip bombs").

    Args:
        archive: Archive file.
        dest: Folder to extract into (created if needed). Use :func:`extract_archive_atomically` to publish the
            result only once it is complete.
        exclude: Predicate on member names (``/``-separated); matching members are skipped and their number logged
            (e.g. :func:`anomalib_medical.data.utils.images.is_os_metadata` for ``__MACOSX`` entries).
        progress: Show a tqdm progress bar.
        max_extracted_bytes: Most bytes the extracted files may hold together; ``None`` (default) allows
            :data:`MAX_EXPANSION_RATIO` times the archive's size, at least :data:`MIN_EXTRACTION_LIMIT` (64 GiB).

    Returns:
        The names of the extracted members.

    Raises:
        FileNotFoundError: If ``archive`` does not exist.
        UnsafeArchiveError: If any member is unsafe (then nothing is written).
        ArchiveError: If the file is not a zip or tar archive, is corrupt, has an encrypted member or a member
            that clashes with a folder, or would expand beyond ``max_extracted_bytes`` (the message names the
            archive and the member or the sizes; nothing is written).

    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        msg = f"Archive {archive} does not exist."
        raise FileNotFoundError(msg)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                zip_members = _zip_members(handle, archive)
                kept = [m for m in zip_members if not (exclude and exclude(m.filename))]
                _check_encryption(kept, archive)
                _check_plan([(m.filename, m.is_dir(), m.file_size) for m in kept], archive, max_extracted_bytes)
                for info in tqdm(kept, desc=f"Extracting {archive.name}", unit="file", disable=not progress):
                    handle.extract(info, dest)
                names = [m.filename for m in kept]
                skipped = len(zip_members) - len(kept)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                tar_members = _tar_members(handle, archive)
                kept_tar = [m for m in tar_members if not (exclude and exclude(m.name))]
                plan = [(m.name, m.isdir(), m.size if m.isfile() else 0) for m in kept_tar if not m.issym()]
                _check_plan(plan, archive, max_extracted_bytes)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                for member in tqdm(kept_tar, desc=f"Extracting {archive.name}", unit="file", disable=not progress):
                    handle.extract(member, dest, **extra)
                names = [m.name for m in kept_tar]
                skipped = len(tar_members) - len(kept_tar)
        else:
            msg = f"{archive} is neither a zip nor a tar archive (size {archive.stat().st_size} bytes)."
            raise ArchiveError(msg)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zipfile.LargeZipFile) as err:
        msg = f"Archive {archive} is corrupt or truncated: {err}."
        raise ArchiveError(msg) from err
    if skipped:
        logger.info("Skipped %d excluded member(s) of %s.", skipped, archive)
    return names


@contextmanager
def staging_directory(parent: str | Path, name: str) -> Iterator[Path]:
    """Create a hidden temporary folder ``parent/.<name>.<random>.partial`` and remove it on exit.

    Move finished results out of it with ``os.replace`` (same file system, atomic); whatever is left is deleted.

    Args:
        parent: Folder to create the staging folder in (created if needed).
        name: Name the staging folder is derived from.

    Yields:
        The staging folder.

    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:  # mkdir (not mkdtemp) so that the published folder gets the usual umask-based permissions
        staging = parent / f".{name}.{secrets.token_hex(4)}{STAGING_SUFFIX}"
        try:
            staging.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_stale_staging(parent: str | Path, name: str) -> list[Path]:
    """List staging folders left behind by killed runs of :func:`staging_directory`.

    Args:
        parent: Folder that was passed to :func:`staging_directory`.
        name: Name that was passed to :func:`staging_directory`.

    Returns:
        The leftover folders, sorted.

    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.glob(f".{name}.*{STAGING_SUFFIX}") if p.is_dir())


def extract_archive_atomically(
    archive: str | Path,
    dest: str | Path,
    locate: Callable[[Path], Path] | None = None,
    verify: Callable[[Path], None] | None = None,
    exclude: Callable[[str], bool] | None = None,
    progress: bool = True,
    max_extracted_bytes: int | None = None,
) -> Path:
    """Extract an archive and publish (part of) it at ``dest`` only once it is complete and verified.

    The archive is extracted into a staging folder of this call's own next to ``dest``; ``locate`` picks the
    folder to publish from the staging folder (default: the staging folder itself), ``verify`` may raise to reject
    it, and the folder is then renamed to ``dest`` with ``os.replace``. On any failure ``dest`` is left untouched
    and the staging folder is removed. When another process publishes ``dest`` while this one extracts (both
    started before either finished), the first published folder stays and is returned; this call's copy is
    discarded. Hold :func:`preparation_lock` on ``dest`` to extract only once.

    Args:
        archive: Zip or tar archive.
        dest: Folder to create; must not exist yet.
        locate: Maps the staging folder to the folder to publish (e.g. ``staging / "chest_xray"``).
        verify: Called on the located folder before it is published; raises to reject it.
        exclude: Predicate on member names to skip (see :func:`safe_extract`).
        progress: Show a tqdm progress bar.
        max_extracted_bytes: Bound on the extracted size (see :func:`safe_extract`).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: If ``dest`` already exists when the call starts.
        UnsafeArchiveError, ArchiveError: See :func:`safe_extract`.

    """
    dest = Path(dest)
    if dest.exists():
        msg = f"Cannot extract {archive} to {dest}: it already exists."
        raise FileExistsError(msg)
    with staging_directory(dest.parent, dest.name) as staging:
        safe_extract(archive, staging, exclude=exclude, progress=progress, max_extracted_bytes=max_extracted_bytes)
        folder = locate(staging) if locate is not None else staging
        if verify is not None:
            verify(folder)
        try:
            os.replace(folder, dest)
        except OSError as err:
            if err.errno not in {errno.ENOTEMPTY, errno.EEXIST} or not dest.is_dir():
                raise
            logger.info("%s was published by another process while this one extracted %s; using it.", dest, archive)
    return dest


def find_stale_downloads(dest: str | Path) -> list[Path]:
    """List the ``.part`` files of :func:`download_file` to ``dest`` (left by killed runs, or still being written).

    Args:
        dest: Destination that was passed to :func:`download_file`.

    Returns:
        The partial files, sorted. Only while holding :func:`preparation_lock` on the data are they known to be
        stale rather than another process's download in progress.

    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.glob(f"{glob.escape(dest.name)}.*{DOWNLOAD_SUFFIX}") if p.is_file())


@contextmanager
def preparation_lock(target: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<target>.lock`` while this process prepares ``target``.

    Blocks until no other process (or thread of this process) holds the lock of ``target``, logging once when it
    has to wait. The lock is an :func:`fcntl.flock` lock, released by the kernel when its holder exits however it
    exits; the lock file itself stays (it is empty). On network file systems it covers several machines where the
    file system supports ``flock`` (NFS v4, Lustre mounted with ``flock``). Not re-entrant: a thread holding the
    lock of ``target`` must not ask for it again.

    Args:
        target: The file or folder being prepared; the lock file is created next to it (with its folder).

    Yields:
        The lock file.

    """
    target = Path(target)
    lock = target.with_name(target.name + LOCK_SUFFIX)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process to finish preparing %s (lock %s).", target, lock)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield lock
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
