"""Every source kind enumerates deterministically and reads back the exact bytes."""

from __future__ import annotations

import io
import json
import tarfile

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.config import LabelConfig, from_mapping, load_yaml
from distill.errors import ConfigError
from distill.sources import create_source, guess_source


@pytest.fixture(scope="module")
def jpegs(skimage_photos) -> dict[str, bytes]:
    from PIL import Image

    out = {}
    for name, path in skimage_photos.items():
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=85)
        out[name] = buffer.getvalue()
    return out


def _read_all(source) -> dict[str, bytes]:
    items = list(source.items())
    assert [i.key for i in items] == [i.key for i in source.items()], "order must be stable"
    return {item.key: source.read(item.locator) for item in items}


def test_folder_and_imagenet_trees(tmp_path, jpegs):
    for index, (name, data) in enumerate(jpegs.items()):
        folder = tmp_path / "train" / f"n0000000{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.JPEG").write_bytes(data)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    for kind in ("folder", "imagenet"):
        read = _read_all(create_source({"kind": kind, "root": str(tmp_path / "train")}))
        assert len(read) == len(jpegs)
        assert read["n00000000/astronaut.JPEG"] == jpegs["astronaut"]


@pytest.mark.parametrize("fmt", ["txt", "csv", "parquet"])
def test_file_lists(tmp_path, jpegs, fmt):
    names = sorted(jpegs)
    for name in names:
        (tmp_path / f"{name}.jpg").write_bytes(jpegs[name])
    listing = tmp_path / f"list.{fmt}"
    if fmt == "txt":
        listing.write_text("\n".join(f"{n}.jpg" for n in names) + "\n")
    elif fmt == "csv":
        listing.write_text("path,other\n" + "".join(f"{n}.jpg,x\n" for n in names))
    else:
        pq.write_table(pa.table({"path": [str(tmp_path / f"{n}.jpg") for n in names]}), listing)
    read = _read_all(create_source(guess_source(str(listing)) if fmt != "parquet"
                                   else {"kind": "filelist", "file": str(listing)}))
    assert list(read.values()) == [jpegs[n] for n in names]


def test_coco(tmp_path, jpegs):
    (tmp_path / "train2017").mkdir()
    images = []
    for index, (name, data) in enumerate(sorted(jpegs.items())):
        (tmp_path / "train2017" / f"{index:012d}.jpg").write_bytes(data)
        images.append({"id": 100 - index, "file_name": f"{index:012d}.jpg", "width": 1, "height": 1})
    (tmp_path / "instances_train2017.json").write_text(json.dumps({"images": images, "annotations": []}))
    source = create_source({"kind": "coco", "annotations": str(tmp_path / "instances_train2017.json"),
                            "images": str(tmp_path / "train2017")})
    read = _read_all(source)
    assert list(read) == sorted(read, key=int), "COCO items come in id order"
    assert read["100"] == min(jpegs.items())[1]


def test_webdataset_tar_shards(tmp_path, jpegs):
    for shard in range(2):
        with tarfile.open(tmp_path / f"{shard:05d}.tar", "w") as archive:
            for index, (name, data) in enumerate(sorted(jpegs.items())):
                key = f"{shard:05d}{index:04d}"
                for suffix, payload in ((".jpg", data), (".json", json.dumps({"name": name}).encode())):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
    read = _read_all(create_source(guess_source(str(tmp_path))))
    assert len(read) == 2 * len(jpegs)
    assert read["00001/000010001"] == sorted(jpegs.items())[1][1]


def test_huggingface_parquet_arrow_and_imagefolder(tmp_path, jpegs):
    names = sorted(jpegs)
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": jpegs[n], "path": f"{n}.jpg"} for n in names], "name": names},
        features=features)
    dataset.to_parquet(tmp_path / "data.parquet")
    dataset.save_to_disk(tmp_path / "saved")
    (tmp_path / "imagefolder").mkdir()
    for name in names:
        (tmp_path / "imagefolder" / f"{name}.jpg").write_bytes(jpegs[name])
    for config in ({"kind": "hf", "data": str(tmp_path / "data.parquet")},
                   {"kind": "hf", "data": str(tmp_path / "saved")},
                   {"kind": "hf", "data": str(tmp_path / "imagefolder")}):
        read = _read_all(create_source(config))
        assert sorted(read.values()) == sorted(jpegs.values()), config


def test_huggingface_streaming_reads_rows_in_any_order_without_preparing_a_copy(
        tmp_path, jpegs, monkeypatch):
    """A streamed dataset (a local parquet stands in for the hub) lists and reads what the
    prepared one does, writes no Arrow copy into the datasets cache, and threads reading a
    shard a little out of order restart the stream only when they go back past its window."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    names = sorted(jpegs) * 3  # 15 rows
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": jpegs[n], "path": f"{n}.jpg"} for n in names]},
        features=datasets.Features({"image": datasets.Image()}))
    dataset.to_parquet(tmp_path / "data.parquet")
    streamed = create_source({"kind": "hf", "data": str(tmp_path / "data.parquet"),
                              "streaming": True})
    items = list(streamed.items())
    assert [i.key for i in items] == [str(i) for i in range(len(names))]
    with ThreadPoolExecutor(3) as pool:
        read = list(pool.map(lambda item: streamed.read(item.locator), items))
    assert read == [jpegs[n] for n in names]
    assert streamed.read("2") == jpegs[names[2]]  # kept in the window: no restart
    assert streamed._cursor.restarts <= 2, f"{streamed._cursor.restarts} restarts for a pass"
    assert not list((tmp_path / "cache").rglob("*.arrow"))


def test_shipped_label_configs_parse(tmp_path):
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("label_*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        from_mapping(LabelConfig, load_yaml(path))


@pytest.mark.parametrize("mapping,message", [
    ({"source": {}, "out": "x", "shard_sise": 10}, "unknown config key shard_sise"),
    ({"source": {}, "out": "x", "decode": {"max_sid": 5}}, "unknown config key decode.max_sid"),
    ({"source": {}, "out": "x", "fusion": {"keep_treshold": 5}}, "fusion.keep_treshold"),
    ({"source": {}, "out": "x", "shard_size": "ten"}, "shard_size must be int"),
    ({"out": "x"}, "missing config key source"),
])
def test_config_errors_name_the_bad_key(mapping, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(LabelConfig, mapping)


def test_unknown_source_kind():
    with pytest.raises(ConfigError, match="source.kind"):
        create_source({"kind": "ftp"})


def test_packaged_photos_come_from_every_installed_package_that_ships_some():
    from distill.sources import packaged_photos

    found = {(path.parent.name, path.name) for path in packaged_photos()}
    expected = {("data", "astronaut.png"), ("sample_data", "grace_hopper.jpg"),
                ("images", "china.jpg"), ("images", "flower.jpg"), ("ref_dir", "I03.bmp"),
                ("test_efficiency_img_dir", "SPAQ_10241.jpg")}
    assert expected <= found
    assert len(found) == len(packaged_photos())  # each file once, in a stable order
