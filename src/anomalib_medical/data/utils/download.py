"""Checksummed downloads and safe, all-or-nothing archive extraction.

Nothing half-written is ever left where a later run would trust it:

- :func:`download_file` streams to ``<dest>.part`` (with a tqdm progress bar and a short socket timeout, so a
  machine without network fails within seconds), checks the length and, when one is given, the SHA-256, and only
  then renames the file to ``dest``. Any failure removes the partial file.
- :func:`verify_sha256` removes a file whose checksum does not match (by default), so it is never used again.
- :func:`safe_extract` validates every member of a zip or tar archive before writing anything: absolute paths,
  drive letters, ``..`` components, links pointing outside the destination (and, in zip files, any symbolic link,
  which :mod:`zipfile` would write as a text file) and device files are rejected with :class:`UnsafeArchiveError`.
- :func:`extract_archive_atomically` extracts into a hidden staging folder next to the destination, lets the caller
  verify the result, and moves it into place with one ``os.replace``; a killed run leaves at most a
  ``.<name>.*.partial`` folder, which no loader looks at (:func:`find_stale_staging` lists them).
"""

from __future__ import annotations

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
_CHUNK = 1 << 20
_USER_AGENT = "anomalib-medical (https://pypi.org/project/anomalib-medical)"
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


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


def verify_sha256(path: str | Path, expected: str, remove_on_mismatch: bool = True) -> None:
    """Check a file's SHA-256, removing the file when it does not match.

    Args:
        path: File to check.
        expected: Expected hex digest.
        remove_on_mismatch: Delete the file on a mismatch, so that no later run trusts it.

    Raises:
        ChecksumError: If the digest differs (the message says whether the file was removed).
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
    """Download ``url`` (``http``, ``https`` or ``file``) to ``dest`` through a ``.part`` file.

    The data is written to ``<dest>.part``; the transfer length (when the server announces one) and the SHA-256
    (when given) are checked before the file is renamed to ``dest``. On any failure the ``.part`` file is removed.

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
    part = dest.with_name(dest.name + ".part")
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
) -> list[str]:
    """Extract a zip or tar archive (any compression tar supports) into ``dest`` after validating every member.

    Args:
        archive: Archive file.
        dest: Folder to extract into (created if needed). Use :func:`extract_archive_atomically` to publish the
            result only once it is complete.
        exclude: Predicate on member names (``/``-separated); matching members are skipped and their number logged
            (e.g. :func:`anomalib_medical.data.utils.images.is_os_metadata` for ``__MACOSX`` entries).
        progress: Show a tqdm progress bar.

    Returns:
        The names of the extracted members.

    Raises:
        FileNotFoundError: If ``archive`` does not exist.
        UnsafeArchiveError: If any member is unsafe (then nothing is written).
        ArchiveError: If the file is not a zip or tar archive, or is corrupt.

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
                for info in tqdm(kept, desc=f"Extracting {archive.name}", unit="file", disable=not progress):
                    handle.extract(info, dest)
                names = [m.filename for m in kept]
                skipped = len(zip_members) - len(kept)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                tar_members = _tar_members(handle, archive)
                kept_tar = [m for m in tar_members if not (exclude and exclude(m.name))]
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
) -> Path:
    """Extract an archive and publish (part of) it at ``dest`` only once it is complete and verified.

    The archive is extracted into a staging folder next to ``dest``; ``locate`` picks the folder to publish from
    the staging folder (default: the staging folder itself), ``verify`` may raise to reject it, and the folder is
    then renamed to ``dest`` with ``os.replace``. On any failure ``dest`` is left untouched and the staging folder
    is removed.

    Args:
        archive: Zip or tar archive.
        dest: Folder to create; must not exist yet.
        locate: Maps the staging folder to the folder to publish (e.g. ``staging / "chest_xray"``).
        verify: Called on the located folder before it is published; raises to reject it.
        exclude: Predicate on member names to skip (see :func:`safe_extract`).
        progress: Show a tqdm progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: If ``dest`` already exists.
        UnsafeArchiveError, ArchiveError: See :func:`safe_extract`.

    """
    dest = Path(dest)
    if dest.exists():
        msg = f"Cannot extract {archive} to {dest}: it already exists."
        raise FileExistsError(msg)
    with staging_directory(dest.parent, dest.name) as staging:
        safe_extract(archive, staging, exclude=exclude, progress=progress)
        folder = locate(staging) if locate is not None else staging
        if verify is not None:
            verify(folder)
        os.replace(folder, dest)
    return dest
