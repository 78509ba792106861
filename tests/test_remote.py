"""Object storage through fsspec, against a real S3 server on 127.0.0.1 (moto's server mode:
conftest's `s3_server`): the read rule on remote objects, folders, manifests and tar shards in a
bucket, and a labeling run from a bucket that is killed and resumed."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

from distill import run_folder
from distill.decode import DecodeError, read_bytes, read_remote
from distill.sources import create_source, guess_source
from tests.conftest import s3_filesystem
from tests.killing import killed_after

PHOTOS = 8


@pytest.fixture(scope="module")
def photos(skimage_photos) -> dict[str, bytes]:
    """Small real JPEGs: the five photos and mirrored copies, 192 px on the long side."""
    found = {}
    for name, path in skimage_photos.items():
        image = Image.open(path).convert("RGB")
        image.thumbnail((192, 192))
        for flip in (False, True):
            if len(found) < PHOTOS:
                buffer = io.BytesIO()
                (image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image).save(
                    buffer, "JPEG", quality=90)
                found[f"{name}{'-flip' if flip else ''}.jpg"] = buffer.getvalue()
    return found


@pytest.fixture(scope="module")
def bucket(photos, s3_server, tmp_path_factory):
    """s3://photos-bucket on the local S3 server: photos/, list.csv, shards/000.tar; the
    same files under a local folder for comparison."""
    fs = s3_filesystem()
    fs.mkdir("photos-bucket")
    local = tmp_path_factory.mktemp("local")
    (local / "photos").mkdir()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for name, data in photos.items():
            fs.pipe(f"photos-bucket/photos/{name}", data)
            (local / "photos" / name).write_bytes(data)
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    fs.pipe("photos-bucket/shards/000.tar", tar.getvalue())
    (local / "000.tar").write_bytes(tar.getvalue())
    fs.pipe("photos-bucket/list.csv", ("path\n" + "".join(f"photos/{n}\n" for n in photos)
                                       + "../other-bucket/x.jpg\n").encode())
    return local


def test_remote_objects_are_held_to_the_read_rule(bucket, photos):
    name, data = next(iter(photos.items()))
    url = f"s3://photos-bucket/photos/{name}"
    assert read_bytes(url) == data
    assert read_remote(url, offset=6, size=4) == data[6:10]  # a range read
    with pytest.raises(DecodeError, match=rf"too large: {len(data)} bytes > 100"):
        read_bytes(url, max_bytes=100)  # refused from the object's info, before reading
    with pytest.raises(DecodeError, match="file not found"):
        read_bytes("s3://photos-bucket/photos/missing.jpg")
    with pytest.raises(DecodeError, match="truncated"):
        read_remote(url, offset=len(data) - 2, size=10)


def test_an_object_that_grew_after_its_info_is_refused(bucket, photos, monkeypatch):
    # the object is replaced by a larger one between `info` and the read: never its head alone
    from distill import remote

    name, data = next(iter(photos.items()))
    monkeypatch.setattr(remote, "_info", lambda fs, path: {"type": "file", "size": len(data) - 1})
    with pytest.raises(DecodeError, match="changed while being read"):
        read_bytes(f"s3://photos-bucket/photos/{name}")


def test_folders_manifests_and_tar_shards_in_a_bucket_read_as_local_ones(bucket, photos):
    guessed = {url: guess_source(url) for url in ("s3://photos-bucket/photos",
                                                  "s3://photos-bucket/list.csv",
                                                  "s3://photos-bucket/shards")}
    assert [g["kind"] for g in guessed.values()] == ["folder", "filelist", "webdataset"]
    folder, manifest, shards = (create_source(g) for g in guessed.values())
    assert {i.key: folder.read(i.locator) for i in folder.items()} == photos
    listed = list(manifest.items())
    assert {i.key: manifest.read(i.locator) for i in listed[:-1]} == {
        f"photos/{n}": data for n, data in photos.items()}
    with pytest.raises(DecodeError, match="outside the source root"):
        manifest.read(listed[-1].locator)
    local = create_source({"kind": "webdataset", "shards": str(bucket / "000.tar")})
    remote_members = {i.key: shards.read(i.locator) for i in shards.items()}
    assert remote_members == {i.key: local.read(i.locator) for i in local.items()}
    assert sorted(remote_members.values()) == sorted(photos.values())
    # a shard's info is asked once for all its members: one HEAD, then a ranged GET each
    from distill import remote

    items, calls = list(shards.items()), []
    fs = remote.filesystem(shards.tars[0])[0]
    fs.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    fs.invalidate_cache()  # as a worker process that never listed the bucket
    remote._SHARDS.clear()
    assert [shards.read(item.locator) for item in items] == list(remote_members.values())
    assert calls == ["HeadObject"] + ["GetObject"] * len(items)


def _label_args(source: str, out, *extra) -> list[str]:
    return ["label", "--source", source, "--out", str(out), "--teachers", "technical",
            "--shard-size", "2", "--batch-size", "2", "--score-workers", "0", "--no-progress",
            *extra]


def _label(source: str, out, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill.cli",
                             *_label_args(source, out, *extra)],
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(out) -> dict[str, dict]:
    return {row["image_id"]: {k: v for k, v in row.items() if k != "path"}
            for row in run_folder.read_labels(out).to_pylist()}


def test_labeling_from_a_bucket_killed_and_resumed_equals_labeling_the_folder(bucket, photos,
                                                                             tmp_path):
    local = _label(str(bucket / "photos"), tmp_path / "local")
    assert local.wait(timeout=300) == 0, local.stderr.read()
    out = tmp_path / "from-s3"
    # killed right after its 2nd shard, reading from the bucket
    killed_after(2, "distill.run_folder:write_shard",
                 *_label_args("s3://photos-bucket/photos", out))
    assert run_folder.completed_shards(out) == {0, 1}
    resumed = _label("s3://photos-bucket/photos", out)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"inputs {PHOTOS}  labeled {PHOTOS}  errors 0" in stdout
    rows = _rows(out)
    assert rows == _rows(tmp_path / "local")
    assert {row["sha1"] for row in rows.values()} == {
        hashlib.sha1(data).hexdigest() for data in photos.values()}
    paths = run_folder.read_labels(out).column("path").to_pylist()
    assert all(path.startswith("s3://photos-bucket/photos/") for path in paths)
    assert not list((out / "shards").glob(".*partial"))


def test_an_output_url_of_no_known_protocol_is_one_line_not_a_local_folder_named_ftp():
    from distill.config import LabelConfig, from_mapping
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="give a local folder, or an s3:// or gs:// prefix"):
        from_mapping(LabelConfig, {"source": {"kind": "folder", "root": "s3://b/photos"},
                                   "out": "ftp://b/run"})
