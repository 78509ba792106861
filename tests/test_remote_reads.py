"""Range reads of WebDataset tar members over http (a server on 127.0.0.1 that logs its
requests): a shard's info is asked once per process, not once per member, and a server
that answers a range request with the whole shard is refused once, for every member,
without the shard being downloaded."""

from __future__ import annotations

import io
import tarfile

import pytest

from distill.decode import DecodeError
from distill.sources import create_source


def _shard(folder, name: str, members: dict[str, bytes]) -> None:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (folder / name).write_bytes(tar.getvalue())


def _members(count: int, size: int) -> dict[str, bytes]:
    return {f"{i:03d}.jpg": bytes([i]) * size for i in range(count)}


def test_a_shards_members_cost_one_info_request_and_one_range_read_each(http_folder, tmp_path):
    members = _members(6, 2000)
    _shard(http_folder.folder, f"{tmp_path.name}.tar", members)  # a name no other test used
    source = create_source({"kind": "webdataset",
                            "shards": f"{http_folder.url}/{tmp_path.name}.tar"})
    items = list(source.items())
    http_folder.requests.clear()
    assert [source.read(item.locator) for item in items] == list(members.values())
    assert http_folder.count("HEAD") == 1  # was one per member
    assert http_folder.count("GET") == len(members)
    assert all(ranged for method, _, ranged in http_folder.requests if method == "GET")


def test_a_server_ignoring_ranges_refuses_a_shard_once_without_sending_it(http_folder,
                                                                          tmp_path):
    members = _members(4, 4 << 20)  # 16 MB: more than any socket buffers in between
    _shard(http_folder.folder, f"{tmp_path.name}.tar", members)
    source = create_source({"kind": "webdataset",
                            "shards": f"{http_folder.url}/{tmp_path.name}.tar"})
    items = list(source.items())
    http_folder.ranges = False  # e.g. a proxy in front of it that drops the Range header
    http_folder.requests.clear()
    http_folder.sent = 0
    reasons = set()
    for item in items:
        with pytest.raises(DecodeError, match="ignores range requests") as refused:
            source.read(item.locator)
        reasons.add(str(refused.value))
    assert len(reasons) == 1 and f"{tmp_path.name}.tar is refused whole" in reasons.pop()
    assert [method for method, _, _ in http_folder.requests] == ["HEAD", "GET"]
    # what the socket buffers took before the client hung up (up to the sender's 4 MB
    # on Linux), never the shard: before, each member's read downloaded all 16 MB
    assert http_folder.sent < (http_folder.folder / f"{tmp_path.name}.tar").stat().st_size / 2
