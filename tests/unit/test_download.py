"""Checksummed download (real HTTP from 127.0.0.1 and file://), safe atomic archive extraction, preparation lock."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import re
import socket
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from anomalib_medical.data.utils import download
from anomalib_medical.data.utils.download import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    extract_archive_atomically,
    find_stale_downloads,
    find_stale_staging,
    preparation_lock,
    safe_extract,
    sha256sum,
    staging_directory,
    verify_sha256,
)
from anomalib_medical.data.utils.images import is_os_metadata


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (free port) in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ChestXRay2017.zip"


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    served = tmp_path / "served"
    served.mkdir()
    return write_zip(served / "data.zip", {"a/b.txt": b"hello", "a/c.txt": os.urandom(3000)})


def test_http_download_writes_file_and_leaves_no_part(payload: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.zip"
    expected = hashlib.sha256(payload.read_bytes()).hexdigest()
    with serve_directory(payload.parent) as base:
        result = download_file(f"{base}/data.zip", dest, sha256=expected.upper(), progress=False)
    assert result == dest
    assert dest.read_bytes() == payload.read_bytes()
    assert sha256sum(dest) == expected
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.zip"]  # no .part file left


def test_file_url_download(payload: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data.zip"
    download_file(payload.as_uri(), dest, progress=False)
    assert dest.read_bytes() == payload.read_bytes()


def test_download_with_wrong_checksum_is_discarded(payload: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data.zip"
    with serve_directory(payload.parent) as base, pytest.raises(ChecksumError, match="discarded"):
        download_file(f"{base}/data.zip", dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [payload.parent]


def test_http_error_names_url(payload: Path, tmp_path: Path) -> None:
    with serve_directory(payload.parent) as base, pytest.raises(DownloadError, match="404") as info:
        download_file(f"{base}/missing.zip", tmp_path / "x.zip", progress=False)
    assert "missing.zip" in str(info.value)
    assert list(tmp_path.iterdir()) == [payload.parent]


def test_unreachable_host_fails_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(DownloadError, match="Cannot reach"):
        download_file(closed_port_url(), tmp_path / "x.zip", timeout=2.0, progress=False)
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


def test_silent_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.zip"
        start = time.monotonic()
        with pytest.raises(DownloadError):
            download_file(url, tmp_path / "x.zip", timeout=0.5, progress=False)
        assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


class _ShortHandler(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes but sends 10, then closes: an interrupted transfer."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_interrupted_transfer_leaves_nothing(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dest = tmp_path / "x.zip"
    dest.write_bytes(b"previous complete file")
    try:
        with pytest.raises(DownloadError):
            download_file(f"http://127.0.0.1:{server.server_address[1]}/x.zip", dest, timeout=5, progress=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert dest.read_bytes() == b"previous complete file"
    assert list(tmp_path.iterdir()) == [dest]


def test_verify_sha256_keeps_the_file_unless_asked_to_remove_it(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    actual = hashlib.sha256(b"abc").hexdigest()
    verify_sha256(path, actual)
    assert path.exists()
    with pytest.raises(ChecksumError, match=rf"f\.bin is {actual}, expected {'1' * 64}; it was kept"):
        verify_sha256(path, "1" * 64)  # by default: a file placed by hand is never deleted
    assert path.exists()
    with pytest.raises(ChecksumError, match=r"f\.bin.*removed"):
        verify_sha256(path, "1" * 64, remove_on_mismatch=True)
    assert not path.exists()


def test_stale_downloads_are_listed(tmp_path: Path) -> None:
    dest = tmp_path / "data.zip"
    (tmp_path / "data.zip.123-abcd1234.part").write_bytes(b"partial")
    (tmp_path / "other.zip.1-00000000.part").write_bytes(b"partial")
    assert find_stale_downloads(dest) == [tmp_path / "data.zip.123-abcd1234.part"]
    assert find_stale_downloads(tmp_path / "absent" / "data.zip") == []


def test_malformed_sha256_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        verify_sha256(path, "abc")


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt", "C:/evil.txt", "a\\..\\..\\e"])
def test_zip_with_escaping_member_writes_nothing(tmp_path: Path, name: str) -> None:
    archive = write_zip(tmp_path / "bad.zip", {"good/first.txt": b"x", name: b"evil"})
    dest = tmp_path / "out" / "inner"
    with pytest.raises(UnsafeArchiveError, match="Nothing was extracted"):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("data/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(info, "../../etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, tmp_path / "out", progress=False)


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as handle:
        for member in members:
            content = (data or {}).get(member.name)
            if content is not None:
                member.size = len(content)
                handle.addfile(member, io.BytesIO(content))
            else:
                handle.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    return member


@pytest.mark.parametrize(
    "member",
    [
        _link("data/escape", "../../outside"),
        _link("data/abs", "/etc/passwd"),
        _link("data/hard", "../outside", tarfile.LNKTYPE),
        _link("data/fifo", "", tarfile.FIFOTYPE),
    ],
    ids=["symlink-up", "symlink-absolute", "hardlink-up", "fifo"],
)
def test_tar_with_unsafe_link_or_device_writes_nothing(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", [tarfile.TarInfo("data/ok.txt"), member], {"data/ok.txt": b"ok"})
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=member.name):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []


def test_tar_with_internal_symlink_is_extracted(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [tarfile.TarInfo("data/real.txt"), _link("data/sub/alias.txt", "../real.txt")],
        {"data/real.txt": b"content"},
    )
    names = safe_extract(archive, tmp_path / "out", progress=False)
    assert sorted(names) == ["data/real.txt", "data/sub/alias.txt"]
    assert (tmp_path / "out" / "data" / "sub" / "alias.txt").read_bytes() == b"content"


def test_exclude_skips_os_metadata(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "mac.zip",
        {"d/a.jpeg": b"1", "__MACOSX/d/._a.jpeg": b"2", "d/.DS_Store": b"3", "d/._a.jpeg": b"4"},
    )
    names = safe_extract(archive, tmp_path / "out", exclude=is_os_metadata, progress=False)
    assert names == ["d/a.jpeg"]
    extracted = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert extracted == ["d/a.jpeg"]


def test_not_an_archive_and_corrupt_archive(tmp_path: Path) -> None:
    text = tmp_path / "page.html"
    text.write_text("<html>Sign in</html>")
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        safe_extract(text, tmp_path / "out", progress=False)
    archive = write_zip(tmp_path / "big.zip", {"a.bin": os.urandom(20000)})
    raw = bytearray(archive.read_bytes())
    raw[100:200] = bytes(100)  # corrupt the member data; the central directory stays readable
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="corrupt"):
        safe_extract(archive, tmp_path / "out2", progress=False)
    with pytest.raises(FileNotFoundError, match=r"nothing\.zip"):
        safe_extract(tmp_path / "nothing.zip", tmp_path / "out3", progress=False)


def test_atomic_extraction_publishes_only_verified_trees(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"top/x.txt": b"x"})
    dest = tmp_path / "data" / "tree"

    def reject(folder: Path) -> None:
        assert (folder / "x.txt").exists()
        msg = "rejected by verify"
        raise ValueError(msg)

    with pytest.raises(ValueError, match="rejected"):
        extract_archive_atomically(archive, dest, locate=lambda s: s / "top", verify=reject, progress=False)
    assert not dest.exists()
    assert list((tmp_path / "data").iterdir()) == []  # staging folder removed

    extract_archive_atomically(archive, dest, locate=lambda s: s / "top", progress=False)
    assert (dest / "x.txt").read_bytes() == b"x"
    assert list((tmp_path / "data").iterdir()) == [dest]
    with pytest.raises(FileExistsError, match="already exists"):
        extract_archive_atomically(archive, dest, progress=False)


def test_staging_directory_is_removed_and_stale_ones_are_listed(tmp_path: Path) -> None:
    with staging_directory(tmp_path, "tree") as staging:
        assert staging.is_dir()
        assert staging.name.startswith(".tree.")
        assert find_stale_staging(tmp_path, "tree") == [staging]  # what a killed run would leave
        (staging / "f").write_text("partial")
    assert not staging.exists()
    assert find_stale_staging(tmp_path, "tree") == []


def _zeros_archive(path: Path, size: int) -> Path:
    """A zip or tar.gz archive of one member of ``size`` zero bytes (it compresses about 1,000 times)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as handle:
            handle.writestr("zeros.bin", bytes(size))
    else:
        _tar(path, [tarfile.TarInfo("zeros.bin")], {"zeros.bin": bytes(size)})
    return path


@pytest.mark.parametrize("name", ["bomb.zip", "bomb.tar.gz"])
def test_archive_expanding_beyond_the_bound_writes_nothing(tmp_path: Path, monkeypatch, name: str) -> None:
    archive = _zeros_archive(tmp_path / name, 2_000_000)
    assert archive.stat().st_size * 500 < 2_000_000
    dest = tmp_path / "out"
    expected = f"{re.escape(name)} would expand to 2,000,000 bytes .* more than the limit of 1,000,000 bytes"
    with pytest.raises(ArchiveError, match=expected):
        safe_extract(archive, dest, max_extracted_bytes=1_000_000, progress=False)
    assert list(dest.iterdir()) == []
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_archive_atomically(archive, tmp_path / "tree", max_extracted_bytes=1_000_000, progress=False)
    assert not (tmp_path / "tree").exists()
    monkeypatch.setattr(download, "MIN_EXTRACTION_LIMIT", 0)  # leaves the default bound of 100 x the archive
    with pytest.raises(ArchiveError, match=rf"limit of {100 * archive.stat().st_size:,} bytes"):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []
    safe_extract(archive, dest, max_extracted_bytes=2_000_000, progress=False)
    assert (dest / "zeros.bin").stat().st_size == 2_000_000


def test_default_bound_allows_at_least_64_gib(tmp_path: Path) -> None:
    archive = _zeros_archive(tmp_path / "small.zip", 2_000_000)  # 1,000 x, but far below 64 GiB
    safe_extract(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "zeros.bin").stat().st_size == 2_000_000


def _mark_encrypted(archive: Path, member: str) -> None:
    """Set the "encrypted" flag of ``member`` in its local header and central directory entry."""
    raw = bytearray(archive.read_bytes())
    for signature, name_length_at, name_at, flags_at in ((b"PK\x03\x04", 26, 30, 6), (b"PK\x01\x02", 28, 46, 8)):
        start = raw.find(signature)
        while start != -1:
            length = int.from_bytes(raw[start + name_length_at : start + name_length_at + 2], "little")
            if raw[start + name_at : start + name_at + length] == member.encode():
                raw[start + flags_at] |= 0x1
            start = raw.find(signature, start + 4)
    archive.write_bytes(bytes(raw))


def test_encrypted_zip_member_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "locked.zip", {"data/readme.txt": b"hello", "data/secret.bin": b"\x01" * 40})
    _mark_encrypted(archive, "data/secret.bin")
    assert [info.flag_bits & 1 for info in zipfile.ZipFile(archive).infolist()] == [0, 1]
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=r"'data/secret\.bin' of .*locked\.zip is encrypted"):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []


def test_member_that_is_a_file_where_a_folder_is_needed_is_named(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "clash.zip", {"data/a": b"file", "data/a/b.txt": b"inside", "data/c": b"ok"})
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=r"'data/a' of .*clash\.zip is a file, but member 'data/a/b\.txt' needs"):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []
    members = [tarfile.TarInfo("d/x/y.txt"), tarfile.TarInfo("d/x")]  # the folder's member comes first
    tar = _tar(tmp_path / "clash.tar.gz", members, {"d/x/y.txt": b"inside", "d/x": b"file"})
    with pytest.raises(ArchiveError, match=r"'d/x' of .*clash\.tar\.gz is a file, but member 'd/x/y\.txt' needs"):
        safe_extract(tar, dest, progress=False)
    assert list(dest.iterdir()) == []


def test_atomic_extraction_uses_a_tree_another_process_published_meanwhile(tmp_path: Path, caplog) -> None:
    archive = write_zip(tmp_path / "a.zip", {"top/x.txt": b"mine"})
    dest = tmp_path / "data" / "tree"

    def published_by_another_process(folder: Path) -> None:
        dest.mkdir(parents=True)
        (dest / "x.txt").write_bytes(b"theirs")

    with caplog.at_level(logging.INFO):
        result = extract_archive_atomically(
            archive, dest, locate=lambda s: s / "top", verify=published_by_another_process, progress=False
        )
    assert result == dest
    assert (dest / "x.txt").read_bytes() == b"theirs"
    assert list((tmp_path / "data").iterdir()) == [dest]  # our copy is discarded
    assert "published by another process" in caplog.text


def test_preparation_lock_lets_one_holder_in_at_a_time(tmp_path: Path, caplog) -> None:
    target = tmp_path / "data" / "tree"
    order: list[str] = []

    def second() -> None:
        with preparation_lock(target):
            order.append("second")

    with caplog.at_level(logging.INFO), preparation_lock(target) as lock:
        assert lock == tmp_path / "data" / "tree.lock"
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while "Waiting for another process" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    assert f"Waiting for another process to finish preparing {target}" in caplog.text
