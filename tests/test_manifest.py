"""Manifests and inputs.parquet at scale: a parquet/CSV list read in Arrow batches, frozen
with one row group per shard, a worker's slice read alone, repeated keys refused in Arrow."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import run_folder
from distill.errors import ConfigError
from distill.labeling.inputs import freeze_inputs
from distill.sources import FileListSource, Source, SourceItem, create_source, guess_source

NAMES = [f"2019/07/IMG_{i:04d}.jpg" for i in range(11)]


def _manifest(tmp_path, names, column="path"):
    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({column: names, "caption": ["x"] * len(names)}), path)
    return path


def _expected_rows(source: Source, root) -> list[dict]:
    """What main's freeze made of the same list: one item at a time, os.path.join'd."""
    return [{"image_id": run_folder.image_id(source.name, name), "key": name,
             "path": os.path.join(root, name), "locator": os.path.join(root, name), "refused": None}
            for name in NAMES]


def test_a_manifest_freezes_into_one_row_group_per_shard(tmp_path):
    config = {"kind": "filelist", "file": str(_manifest(tmp_path, NAMES, column="url"))}
    source = create_source(config)
    out = tmp_path / "run"
    assert freeze_inputs(out, source, config, shard_size=4) == len(NAMES)
    inputs = out / run_folder.INPUTS_FILE
    assert [pq.read_metadata(inputs).row_group(g).num_rows for g in range(3)] == [4, 4, 3]
    rows = pq.read_table(inputs).to_pylist()
    assert rows == _expected_rows(source, tmp_path)
    for k in range(3):
        assert run_folder.read_shard_inputs(out, k, 4).to_pylist() == rows[k * 4:(k + 1) * 4]
    assert run_folder.read_shard_inputs(out, 3, 4).num_rows == 0
    # a resume checks the list instead of listing again; another source is refused
    assert freeze_inputs(out, source, config, shard_size=4) == len(NAMES)
    with pytest.raises(ConfigError, match="another source"):
        freeze_inputs(out, source, {**config, "column": "caption"}, shard_size=4)


def test_slices_of_a_run_frozen_with_another_grouping_are_the_same(tmp_path):
    """A run written before (one row group, or groups that straddle shards) reads alike."""
    table = pa.table({"image_id": [str(i) for i in range(10)], "key": [str(i) for i in range(10)]})
    for group_size in (10, 3):
        out = tmp_path / f"run{group_size}"
        out.mkdir()
        pq.write_table(table, out / run_folder.INPUTS_FILE, row_group_size=group_size)
        for k in range(3):
            assert run_folder.read_shard_inputs(out, k, 4) == table.slice(k * 4, 4)


def test_a_processs_slices_parse_the_footer_once_until_the_file_is_replaced(tmp_path,
                                                                          monkeypatch):
    parsed = []  # per ParquetFile opened: whether it parsed the footer

    class Counted(pq.ParquetFile):
        def __init__(self, source, *args, metadata=None, **options):
            parsed.append(metadata is None)
            super().__init__(source, *args, metadata=metadata, **options)

    monkeypatch.setattr(pq, "ParquetFile", Counted)
    out = tmp_path / "run"
    out.mkdir()
    table = pa.table({"image_id": [str(i) for i in range(10)], "key": [str(i) for i in range(10)]})
    pq.write_table(table, out / run_folder.INPUTS_FILE, row_group_size=4)
    for k in range(3):
        assert run_folder.read_shard_inputs(out, k, 4) == table.slice(k * 4, 4)
    assert parsed == [True, False, False]
    replaced = pa.table({"image_id": ["x", "y"], "key": ["x", "y"]})  # a new run in the folder
    pq.write_table(replaced, out / "new.parquet")
    os.replace(out / "new.parquet", out / run_folder.INPUTS_FILE)
    assert run_folder.read_shard_inputs(out, 0, 4) == replaced
    assert parsed == [True, False, False, True]


def test_a_repeated_key_is_one_line_and_leaves_no_inputs_file(tmp_path):
    names = NAMES[:5] + [NAMES[2]] + NAMES[5:]
    config = {"kind": "filelist", "file": str(_manifest(tmp_path, names))}
    with pytest.raises(ConfigError, match=r"yields the key '2019/07/IMG_0002.jpg' twice \(.*"
                                          r"IMG_0002.jpg and .*IMG_0002.jpg\)"):
        freeze_inputs(tmp_path / "run", create_source(config), config, shard_size=4)
    assert not [p for p in (tmp_path / "run").iterdir()]


def test_csv_manifests_keep_odd_names_as_the_item_by_item_listing_did(tmp_path):
    """Bytes that are not UTF-8 and backslashes come out as `names.as_text` spells them, the
    same keys (so image ids) a .txt list of the same names gives."""
    odd = [b"caf\xe9.jpg", b"back\\slash.jpg", b"s p a c e.jpg"]
    (tmp_path / "list.csv").write_bytes(b"path,other\n" + b"".join(n + b",1\n" for n in odd)
                                        + b",1\n")
    (tmp_path / "list.txt").write_bytes(b"\n".join(odd) + b"\n")
    from_csv = list(FileListSource(str(tmp_path / "list.csv")).items())
    from_txt = list(FileListSource(str(tmp_path / "list.txt")).items())
    assert [i.key for i in from_csv] == ["caf\\xe9.jpg", "back\\\\slash.jpg", "s p a c e.jpg"]
    assert from_csv == from_txt


def test_remote_entries_stay_urls_and_local_ones_stay_inside_the_root(tmp_path):
    names = ["https://example.org/a.jpg", "/etc/passwd", "../outside.jpg", "in.jpg"]
    source = FileListSource(str(_manifest(tmp_path, names)))
    items = {i.key: i for i in source.items()}
    assert items["https://example.org/a.jpg"].locator == "https://example.org/a.jpg"
    (tmp_path / "in.jpg").write_bytes(b"bytes")
    assert source.read(items["in.jpg"].locator) == b"bytes"
    for name in ("/etc/passwd", "../outside.jpg"):
        with pytest.raises(Exception, match="outside the source root"):
            source.read(items[name].locator)


def test_a_parquet_of_names_is_guessed_a_manifest_and_one_of_images_a_dataset(tmp_path):
    assert guess_source(str(_manifest(tmp_path, NAMES)))["kind"] == "filelist"
    images = tmp_path / "images.parquet"
    pq.write_table(pa.table({"image": [{"bytes": b"", "path": "a.jpg"}], "path": ["a.jpg"]}), images)
    assert guess_source(str(images))["kind"] == "hf"


def test_any_source_freezes_through_its_item_batches(tmp_path):
    class Three(Source):
        def items(self):
            for key in ("c", "a", "b"):
                yield SourceItem(key, f"/p/{key}", key, "refused" if key == "a" else None)

    out = tmp_path / "run"
    assert freeze_inputs(out, Three("three"), {"kind": "three"}, shard_size=2) == 3
    assert run_folder.read_shard_inputs(out, 1, 2).to_pylist() == [
        {"image_id": run_folder.image_id("three", "b"), "key": "b", "path": "/p/b",
         "locator": "b", "refused": None}]


def test_reference_fusion_shard_by_shard_equals_fusing_the_whole_run(tmp_path):
    from distill.labeling import fuse_run
    from distill.scoring import FusionConfig, apply

    scores = {"score_brisque": [10.0, 80.0, 35.0, None, 55.0],
              "score_piqe": [20.0, 70.0, 15.0, 40.0, 90.0]}
    table = pa.table({"image_id": list("abcde"), **scores})
    for k, (start, rows) in enumerate(((0, 2), (2, 0), (2, 3))):
        run_folder.write_table(run_folder.labels_path(tmp_path, k), table.slice(start, rows))
    for fusion in (FusionConfig(), FusionConfig(normalisation="rank"),
                   FusionConfig(keep_top_percent=40)):
        whole = apply(table, fusion)
        summary = fuse_run(tmp_path, fusion)
        assert summary == whole.select(["image_id", *run_folder.FUSED_COLUMNS])
        shards = pa.concat_tables(run_folder.read_parquet(p) for p in
                                  run_folder.label_files(tmp_path) if pq.read_metadata(p).num_rows)
        assert shards.to_pandas().equals(whole.to_pandas())  # NaN norms: equal here, not in Arrow


def test_a_manifest_of_http_urls_reads_each_object_under_the_read_rule(http_folder, tmp_path):
    """https:// (here http:// on 127.0.0.1) through fsspec: the size from the server's
    headers, a missing object as its error reason, and a range read from a server that
    ignores ranges refused as such rather than misread."""
    from distill.decode import DecodeError, read_bytes, read_remote

    (http_folder.folder / "a.jpg").write_bytes(b"A" * 300)
    http_folder.ranges = False
    base = http_folder.url
    source = FileListSource(str(_manifest(tmp_path, [f"{base}/a.jpg", f"{base}/gone.jpg"])))
    found, missing = source.items()
    assert source.read(found.locator) == b"A" * 300
    with pytest.raises(DecodeError, match="ignores range requests"):
        read_remote(found.locator, offset=10, size=5)
    with pytest.raises(DecodeError, match="too large: 300 bytes > 100"):
        read_bytes(found.locator, max_bytes=100)
    with pytest.raises(DecodeError, match="file not found"):
        source.read(missing.locator)
