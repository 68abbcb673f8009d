"""Several real processes preparing the same data at once: one downloads, extracts or fills the cache; others wait.

Lightning calls ``prepare_data`` once per node by default; with the data on shared storage several processes do it
at the same moment. Each test forks two processes that start together (a barrier) and serves files slowly from
127.0.0.1, so that their work overlaps. The processes are forked (not spawned) so that they do not import anomalib
again; the HTTP server runs in a process of its own, so the test process has no thread when it forks.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import BinaryIO

import pytest

from anomalib_medical.data.chest_xray import ARCHIVE_NAME
from anomalib_medical.data.utils.cache import CacheEntry, Preprocessing, RadiographCache
from anomalib_medical.data.utils.download import download_file, extract_archive_atomically, preparation_lock
from tests.unit.fake_chest_data import write_xray
from tests.unit.test_chest_xray import SMALL, make_tree, small_datamodule, zip_tree
from tests.unit.test_download import write_zip

pytestmark = pytest.mark.slow

FORK = multiprocessing.get_context("fork")


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files 1 KiB every 50 ms and counts the GET requests."""

    requests = None  # a shared counter, set in the server process

    def do_GET(self) -> None:
        with self.requests.get_lock():
            self.requests.value += 1
        super().do_GET()

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:
        while chunk := source.read(1024):
            outputfile.write(chunk)
            time.sleep(0.05)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(directory: Path, requests: object, ready: Connection) -> None:
    _SlowHandler.requests = requests
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_SlowHandler, directory=str(directory))) as server:
        ready.send(server.server_address[1])
        server.serve_forever()


@contextmanager
def slow_server(directory: Path) -> Iterator[tuple[str, object]]:
    """Serve ``directory`` slowly from a process of its own; yields the base URL and the GET counter."""
    requests = FORK.Value("i", 0)
    receiver, sender = FORK.Pipe(duplex=False)
    process = FORK.Process(target=_serve, args=(directory, requests, sender), daemon=True)
    process.start()
    try:
        assert receiver.poll(30), "the HTTP server did not start"
        yield f"http://127.0.0.1:{receiver.recv()}", requests
    finally:
        process.terminate()
        process.join()


def _child(work: Callable[[], object], barrier: object, log: Path) -> None:
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers = [handler]
    logging.getLogger().setLevel(logging.INFO)
    barrier.wait(timeout=60)
    try:
        work()
    except BaseException:
        logging.getLogger(__name__).exception("process %d failed", os.getpid())
        raise


def run_together(work: Callable[[], object], logs: Path, count: int = 2) -> str:
    """Run ``work()`` in ``count`` forked processes released at the same moment; return their logs.

    Fails when a process fails or hangs.
    """
    barrier = FORK.Barrier(count)
    paths = [logs / f"process{index}.log" for index in range(count)]
    processes = [FORK.Process(target=_child, args=(work, barrier, path)) for path in paths]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
        process.join()
    text = "\n".join(path.read_text() for path in paths if path.is_file())
    assert not hung, f"{len(hung)} process(es) hung:\n{text}"
    assert [process.exitcode for process in processes] == [0] * count, text
    return text


def test_two_processes_preparing_chest_xray_download_and_extract_once(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive = zip_tree(make_tree(tmp_path / "src", SMALL), served / ARCHIVE_NAME)
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = tmp_path / "shared"
    with slow_server(served) as (base, requests):
        logs = run_together(
            lambda: small_datamodule(root, url=f"{base}/{ARCHIVE_NAME}", sha256=sha256).prepare_data(), tmp_path
        )
        assert requests.value == 1  # one process downloaded, the other waited
    assert "prepared by another process meanwhile; using it" in logs
    assert "interrupted" not in logs  # the winner's live staging folder is never called a leftover
    assert sorted(path.name for path in root.iterdir()) == [ARCHIVE_NAME, "chest_xray", "chest_xray.lock"]
    datamodule = small_datamodule(root, download=False)
    datamodule.setup()
    assert (len(datamodule.train_data), len(datamodule.val_data), len(datamodule.test_data)) == (6, 4, 6)


def test_leftovers_of_killed_runs_are_removed_under_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "data"
    zip_tree(make_tree(tmp_path / "src", SMALL), tmp_path / ARCHIVE_NAME)
    staging = make_tree(root / ".chest_xray.deadbeef.partial" / "chest_xray", SMALL).parent
    part = root / f"{ARCHIVE_NAME}.123-deadbeef.part"
    part.write_bytes(b"half an archive")
    small_datamodule(root, url=(tmp_path / ARCHIVE_NAME).as_uri()).prepare_data()
    assert not staging.exists()
    assert not part.exists()
    assert (root / "chest_xray" / "train").is_dir()


def test_two_processes_filling_one_cache_preprocess_each_image_once(tmp_path: Path) -> None:
    entries = [
        CacheEntry(f"img{i}", write_xray(tmp_path / "src" / f"img{i}.dcm", seed=i), ((1, 1, 9, 9),)) for i in range(4)
    ]
    loads = tmp_path / "loads.txt"

    def fill() -> None:
        load = Preprocessing.load

        def slow_load(self: Preprocessing, source: Path) -> object:
            with loads.open("a") as handle:
                handle.write(f"{source.name}\n")
            time.sleep(0.2)
            return load(self, source)

        Preprocessing.load = slow_load  # in this forked process only
        RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8))).build(entries, workers=2)

    logs = run_together(fill, tmp_path)
    assert sorted(loads.read_text().split()) == [f"img{i}.dcm" for i in range(4)]  # once each, by one process
    assert "Waiting for another process to finish preparing" in logs
    assert RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8))).missing(entries) == []


def test_two_processes_downloading_to_one_file_both_succeed(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(20_000)
    (served / "data.bin").write_bytes(payload)
    dest = tmp_path / "shared" / "data.bin"
    with slow_server(served) as (base, requests):
        sha256 = hashlib.sha256(payload).hexdigest()
        run_together(lambda: download_file(f"{base}/data.bin", dest, sha256=sha256, progress=False), tmp_path)
        assert requests.value == 2  # no lock here: both download, each through its own .part file
    assert dest.read_bytes() == payload
    assert [path.name for path in dest.parent.iterdir()] == ["data.bin"]


def test_two_processes_extracting_to_one_folder_both_succeed(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    dest = tmp_path / "data" / "tree"

    def extract() -> None:
        extract_archive_atomically(
            archive, dest, locate=lambda staging: staging / "top", verify=lambda _: time.sleep(1.5), progress=False
        )

    logs = run_together(extract, tmp_path)
    assert "published by another process while this one extracted" in logs
    assert (dest / "sub" / "y.txt").read_bytes() == b"y"
    assert list(dest.parent.iterdir()) == [dest]  # the loser's staging folder is gone


def test_the_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    acquired = FORK.Event()

    def hold() -> None:
        with preparation_lock(target):
            acquired.set()
            time.sleep(600)

    holder = FORK.Process(target=hold)
    holder.start()
    try:
        assert acquired.wait(30)
        with (tmp_path / "tree.lock").open("a") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.join()
    start = time.monotonic()
    with preparation_lock(target):
        assert time.monotonic() - start < 5
