"""distill dedup on real photos: exact and near duplicates, the kept member, the leakage guard,
the CLIP path (tiny random model: plumbing only), index kinds, empty and singleton runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from benchmarks.dedup_accuracy import (
    EDITS,
    Item,
    build_accuracy_set,
    cluster_precision_recall,
    source_photos,
    sweep,
    tiny_clip_embeddings,
    write_labels_run,
)
from distill.cli.dedup import dedup as dedup_command
from distill.deduplication import DEFAULT_THRESHOLD, run_dedup
from distill.errors import DistillError
from distill.run_folder import load_dedup
from distill.similar import IndexSpec, descriptors, near_duplicate_pairs

FEW_SOURCES = ("chelsea", "coffee", "camera")
# crop80, the edit the offline descriptor misses most, is left to the accuracy test's statistics.
FEW_EDITS = tuple(e for e in EDITS if e[0] in ("jpeg30", "resize0.3", "crop90", "hflip",
                                               "bright-10", "jpeg90"))


def _table(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out / "dedup.parquet").to_pylist()
    return {row["image_id"]: row for row in rows}


@pytest.fixture(scope="module")
def accuracy_set(tmp_path_factory) -> list[Item]:
    return build_accuracy_set(tmp_path_factory.mktemp("accuracy"))


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> list[Item]:
    sources = {name: path for name, path in source_photos().items() if name in FEW_SOURCES}
    return build_accuracy_set(tmp_path_factory.mktemp("few"), sources, FEW_EDITS, seed=1)


def test_offline_descriptor_meets_the_accuracy_bar(accuracy_set, tmp_path):
    groups = [item.group for item in accuracy_set]
    assert len(set(groups)) >= 30  # 24 source photos + 16 corner crops
    vectors, _, failures = descriptors.offline_descriptors([i.path for i in accuracy_set],
                                                           progress=False)
    assert not failures
    tau = DEFAULT_THRESHOLD["offline"]
    (row,) = sweep(groups, vectors, descriptors.mirror_signs(), [tau])
    assert row["pair_precision"] >= 0.95 and row["pair_recall"] >= 0.9, row
    # The whole command on a labeling run of the same set: its clusters score as well.
    summary = run_dedup(write_labels_run(tmp_path / "run", accuracy_set), progress=False)
    assert summary["descriptor"] == "offline" and summary["threshold"] == tau
    table = pq.read_table(tmp_path / "run" / "dedup.parquet")
    by_id = {f"{i.group}/{i.edit}": i.group for i in accuracy_set}
    scores = cluster_precision_recall([by_id[i] for i in table.column("image_id").to_pylist()],
                                      table.column("cluster_id").to_numpy())
    assert scores["cluster_precision"] >= 0.95 and scores["cluster_recall"] >= 0.9, scores


def test_near_duplicates_keep_the_best_member(few, tmp_path):
    # The jpeg90 copy is the best of each group: it must be kept, whatever its row.
    quality = [9.0 if item.edit == "jpeg90" else 3.0 + 0.1 * n for n, item in enumerate(few)]
    summary = run_dedup(write_labels_run(tmp_path, few, quality), progress=False)
    rows = _table(tmp_path)
    for source in FEW_SOURCES:
        members = [r for key, r in rows.items() if key.split("/")[0] == source]
        best = f"{source}/jpeg90"
        assert len({r["cluster_id"] for r in members}) == 1
        assert not rows[best]["is_duplicate"] and rows[best]["dup_of"] is None
        for row in members:
            if row["image_id"] != best:
                assert row["is_duplicate"] and row["dup_of"] == best and row["reason"] == "near"
                assert 0.0 < row["similarity"] <= 1.0
    groups = {item.group for item in few}  # the sources and their distinct corner crops
    assert summary["kept"] == len(groups) and summary["clusters"] == len(FEW_SOURCES)
    assert summary["near_duplicates"] == len(few) - len(groups)
    assert load_dedup(tmp_path) == {key for key, r in rows.items() if r["is_duplicate"]}


def test_exact_duplicates_share_a_sha1_even_without_a_descriptor(few, tmp_path):
    original = next(i for i in few if i.edit == "original" and i.group == "chelsea")
    copy = tmp_path / "copy.png"
    shutil.copyfile(original.path, copy)
    vanished = tmp_path / "vanished.png"  # same bytes when labeled, gone since: no descriptor
    shutil.copyfile(original.path, vanished)
    other = next(i for i in few if i.edit == "original" and i.group == "coffee")
    items = [original, Item(copy, "chelsea", "copy"), Item(vanished, "chelsea", "vanished"), other]
    write_labels_run(tmp_path / "run", items, quality=[4.0, 8.0, 2.0, 5.0])
    vanished.unlink()
    summary = run_dedup(tmp_path / "run", progress=False)
    rows = _table(tmp_path / "run")
    for name in ("chelsea/original", "chelsea/vanished"):
        assert rows[name]["dup_of"] == "chelsea/copy" and rows[name]["reason"] == "exact"
        assert rows[name]["similarity"] == 1.0
    assert not rows["chelsea/copy"]["is_duplicate"] and not rows["coffee/original"]["is_duplicate"]
    assert summary["exact_duplicates"] == 2 and summary["no_descriptor"] == 1


def test_leakage_guard_drops_whole_clusters_near_a_benchmark_image(few, tmp_path):
    run = write_labels_run(tmp_path / "run", few)
    bench = tmp_path / "bench"
    bench.mkdir()
    coffee = next(i for i in few if i.edit == "original" and i.group == "coffee")
    from PIL import Image

    Image.open(coffee.path).convert("RGB").resize((300, 200)).save(bench / "coffee.jpg", quality=60)
    shutil.copyfile(source_photos()["astronaut"], bench / "unrelated.png")
    summary = run_dedup(run, against=bench, progress=False)
    rows = _table(run)
    coffee_rows = [r for k, r in rows.items() if k.startswith("coffee/")]
    assert all(r["reason"] == "bench" and r["dup_of"] == "bench:coffee.jpg" for r in coffee_rows)
    assert summary["dropped_by_leakage_guard"] == len(coffee_rows)
    assert summary["leakage_guard"]["clusters_dropped"] == 1
    assert summary["kept"] == len({i.group for i in few}) - 1  # all but the coffee cluster


def test_clip_path_plumbing_with_a_tiny_random_model(few, tmp_path):
    """Random weights: the embeddings mean nothing, so this checks wiring, not accuracy."""
    items = [i for i in few if i.group != "camera"]
    embeddings = tiny_clip_embeddings([i.path for i in items], tmp_path)
    assert embeddings.shape == (len(items), 32)
    # An exact copy of one image's embedding must pair with it at any τ < 1.
    embeddings[1] = embeddings[0]
    run = write_labels_run(tmp_path / "run", items, embeddings=embeddings)
    summary = run_dedup(run, threshold=0.9999, progress=False)
    assert summary["descriptor"] == "clip" and summary["index"]["dim"] == 32
    rows = _table(run)
    first, second = (f"{i.group}/{i.edit}" for i in items[:2])
    assert rows[first]["cluster_id"] == rows[second]["cluster_id"]
    assert rows[second]["is_duplicate"] and rows[second]["reason"] == "near"
    # The leakage guard takes benchmark vectors of the same space from a .npy file.
    np.save(tmp_path / "bench.npy", embeddings[5:6] * 2.0)  # unnormalised on purpose
    summary = run_dedup(run, against=tmp_path / "bench.npy", threshold=0.9999, progress=False)
    assert _table(run)[f"{items[5].group}/{items[5].edit}"]["dup_of"] == "bench:0"
    assert summary["dropped_by_leakage_guard"] >= 1
    with pytest.raises(DistillError, match="--descriptor offline"):
        run_dedup(run, against=tmp_path, progress=False)  # a folder needs the offline descriptor
    np.save(tmp_path / "wrong.npy", np.ones((2, 8), dtype=np.float32))
    with pytest.raises(DistillError, match="8-d"):
        run_dedup(run, against=tmp_path / "wrong.npy", progress=False)


def test_empty_and_singleton_runs(few, tmp_path):
    for count in (0, 1):
        run = write_labels_run(tmp_path / f"run{count}", few[:count])
        summary = run_dedup(run, progress=False)
        table = pq.read_table(run / "dedup.parquet")
        assert table.num_rows == count and summary["images"] == count
        assert summary["kept"] == count and summary["dropped"] == 0
        assert load_dedup(run) == set()


def test_index_kinds_find_the_same_pairs_and_k_grows_for_big_clusters():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors[100:140] = vectors[7] + 0.01 * rng.standard_normal((40, 64))  # 41 near copies
    vectors[2000] = vectors[1500] + 0.05 * rng.standard_normal(64)
    vectors = descriptors.normalise_rows(vectors)
    valid = np.ones(len(vectors), dtype=bool)
    found = {}
    for kind in ("flat", "ivf", "hnsw"):
        a, b, sims, info = near_duplicate_pairs(vectors, valid, 0.95, IndexSpec(kind=kind, k=4),
                                                progress=False)
        assert info["kind"] == kind and (sims >= 0.95).all()
        found[kind] = set(zip(a.tolist(), b.tolist()))
    assert len(found["flat"]) == 41 * 40 // 2 + 1  # k=4 grew until every pair was seen
    assert found["ivf"] == found["flat"] == found["hnsw"]


def test_cli_prints_a_summary_and_one_line_errors(few, tmp_path):
    run = write_labels_run(tmp_path, few)
    result = CliRunner().invoke(dedup_command, ["--labels", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"kept {len({i.group for i in few})}," in result.output
    assert "index flat" in result.output
    result = CliRunner().invoke(dedup_command, ["--labels", str(run), "--descriptor", "clip"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("distill: error:") and "--descriptor offline" in result.output
    with pytest.raises(DistillError, match="run `distill dedup"):
        load_dedup(tmp_path / "elsewhere")
    assert load_dedup(tmp_path / "elsewhere", missing_ok=True) == set()
