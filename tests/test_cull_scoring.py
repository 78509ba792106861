"""Cull's scoring pass in threads: the journal is the one a single thread writes, line for
line, a cut run resumes to it, and decoding runs only a bounded number of photos ahead."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distill.culling import JOURNAL, CullOptions, cull
from distill.culling import run as cull_run
from tests.test_label import _photos


@pytest.fixture()
def folder(skimage_photos, tmp_path) -> Path:
    """Photos with unreadable files between them, so error lines fall inside batches."""
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for index, image in enumerate(_photos(skimage_photos)):
        image.save(photos / ("trip" if index % 2 else ".") / f"img{index:02d}.jpg", quality=90)
    (photos / "img03b.jpg").write_text("not a photo")
    (photos / "trip" / "img05b.jpg").write_bytes(b"")
    return photos


def _journal_lines(dest: Path) -> list[str]:
    return (dest / JOURNAL).read_text().splitlines()


def _cull(folder, student_file, dest, monkeypatch, threads, **options):
    monkeypatch.setattr(cull_run, "scoring_threads", lambda: threads)
    return cull(folder, student_file, dest=dest, progress=False,
                options=CullOptions(batch_size=3, **options))


def test_threads_write_the_journal_of_one_thread(folder, student_file, tmp_path, monkeypatch):
    _cull(folder, student_file, tmp_path / "one", monkeypatch, threads=1)
    summary = _cull(folder, student_file, tmp_path / "three", monkeypatch, threads=3)
    assert summary["error"] == 2
    assert _journal_lines(tmp_path / "three") == _journal_lines(tmp_path / "one")


def test_a_cut_run_resumes_to_the_uninterrupted_journal(folder, student_file, tmp_path,
                                                        monkeypatch):
    _cull(folder, student_file, tmp_path / "whole", monkeypatch, threads=2)
    # cut at a whole batch, so that the rest is batched as in the whole run (within a batch,
    # error lines come before the batch's scores)
    first = _cull(folder, student_file, tmp_path / "cut", monkeypatch, threads=2, max_images=3)
    assert first["remaining"] > 0 and first["undecided"] + first["error"] == first["total"] == 3
    _cull(folder, student_file, tmp_path / "cut", monkeypatch, threads=2)
    assert _journal_lines(tmp_path / "cut") == _journal_lines(tmp_path / "whole")


def test_in_order_keeps_order_and_stays_at_most_ahead():
    started, taken, lock = [], 0, threading.Lock()

    def work(item):
        with lock:
            started.append(item)
            # `ahead` in flight, and the one being handed to the consumer
            assert len(started) - taken <= 3 + 1
        time.sleep(0.002 * (item % 3))  # finishing out of order
        return item * 10

    with ThreadPoolExecutor(4) as pool:
        results = []
        for result in cull_run._in_order(pool, work, range(20), ahead=3):
            results.append(result)
            taken += 1
            time.sleep(0.005)  # a slow consumer: the threads must wait, not run on
    assert results == [item * 10 for item in range(20)]


def test_in_order_raises_the_first_failure_where_it_comes():
    def work(item):
        if item == 2:
            raise ValueError("photo 2")
        return item

    with ThreadPoolExecutor(2) as pool:
        results = cull_run._in_order(pool, work, range(5), ahead=2)
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(ValueError, match="photo 2"):
            next(results)
