"""The sharded dedup plan (issue 18.6) against the exact single-machine plan, on small vectors."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from benchmarks.dedup_scale import synthetic_vectors, write_run
from distill.cli.dedup import dedup as dedup_command
from distill.errors import ConfigError
from distill.similar import (
    IndexSpec,
    ShardSpec,
    descriptors,
    mirror_signs,
    near_duplicate_pairs,
    sharded_pairs,
)
from distill.similar.sharded import REACH, route_chunk

EXACT = IndexSpec(kind="flat")


def _pairs(found) -> set[tuple[int, int]]:
    return set(zip(found[0].tolist(), found[1].tolist()))


@pytest.fixture(scope="module")
def planted():
    """Clustered background (same-centre cosine ≈ 0.64) and 2 % near copies (0.97-0.995)."""
    vectors, _, _ = synthetic_vectors(10_000, 200, 0.02, dim=129, seed=3)
    return vectors, np.ones(len(vectors), dtype=bool)


def test_sharded_plan_finds_the_exact_plans_pairs(planted):
    vectors, valid = planted
    exact = _pairs(near_duplicate_pairs(vectors, valid, 0.95, EXACT, progress=False))
    a, b, sims, info = sharded_pairs(vectors, valid, 0.95, ShardSpec(clusters=64),
                                     progress=False)
    assert info["kind"] == "sharded" and info["clusters"] == 64 and info["reach"] == REACH
    assert 1 <= info["cells_per_vector"] < 1.5 and info["pair_reach_max"] <= REACH
    assert len(exact) >= 200 and _pairs((a, b)) == exact and (sims >= 0.95).all()


def test_mirrored_copies_are_found_through_their_mirror_entries(planted):
    vectors, valid = planted
    vectors, signs = vectors[:5000].astype(np.float32), mirror_signs()
    vectors[4000:4100] = descriptors.normalise_rows(vectors[:100] * signs)  # flipped copies
    exact = _pairs(near_duplicate_pairs(vectors, valid[:5000], 0.95, EXACT, signs,
                                        progress=False))
    a, b, _, info = sharded_pairs(vectors, valid[:5000], 0.95, ShardSpec(clusters=16), signs,
                                  progress=False)
    assert {(r, 4000 + r) for r in range(100)} <= exact and _pairs((a, b)) == exact
    assert info["pair_reach_max"] <= REACH


def test_a_pair_found_through_mirror_entries_reports_the_reach_it_needed():
    """Kept to their home cells (reach 0), found pairs met at home through some entry pair
    (a row or its mirror, with the other's): each needed no reach, whichever entries met."""
    rng = np.random.default_rng(0)
    signs = mirror_signs()
    centres = rng.standard_normal((80, len(signs))).astype(np.float32)
    originals = descriptors.normalise_rows(
        centres[rng.integers(0, 80, 2000)] + 0.5 * rng.standard_normal((2000, len(signs))))
    flipped = descriptors.normalise_rows(
        originals * signs + 0.03 * rng.standard_normal(originals.shape))  # edited, flipped
    vectors = np.r_[originals, flipped].astype(np.float32)
    a, _, _, info = sharded_pairs(vectors, np.ones(len(vectors), dtype=bool), 0.95,
                                  ShardSpec(clusters=32, reach=0), signs, progress=False)
    assert len(a) > 100 and info["pair_reach_max"] == 0


def test_reach_zero_misses_pairs_across_cells_and_reach_one_misses_none():
    """Pairs near τ straddle cell boundaries: a vector kept to its home cell (reach 0) loses
    some; the margin the module docstring proves (reach 1) loses none."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((150, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 150, 3000)] + 0.3 * rng.standard_normal((3000, 64))
    vectors = descriptors.normalise_rows(vectors.astype(np.float32))
    valid = np.ones(3000, dtype=bool)
    exact = _pairs(near_duplicate_pairs(vectors, valid, 0.9, EXACT, progress=False))
    at_home = sharded_pairs(vectors, valid, 0.9, ShardSpec(clusters=16, reach=0), progress=False)
    proven = sharded_pairs(vectors, valid, 0.9, ShardSpec(clusters=16, reach=1), progress=False)
    assert _pairs(at_home) < exact and len(_pairs(at_home)) > 0.9 * len(exact)
    assert _pairs(proven) == exact and proven[3]["cells_per_vector"] > 1
    # What each pair needed to share a home cell: nothing when they met at home, and the
    # pairs reach 0 lost needed more than nothing.
    assert at_home[3]["pair_reach_max"] == 0 < proven[3]["pair_reach_max"] <= 1


def test_a_vector_looks_past_its_first_cells_while_its_margin_holds_more():
    centroids = descriptors.normalise_rows(
        np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32))
    chunk = centroids[:3] + 0.01
    positions, cells, home, best = route_chunk(chunk, centroids, margin=3.0)  # every cell
    assert sorted(zip(positions.tolist(), cells.tolist())) == [(p, c) for p in range(3)
                                                               for c in range(50)]
    assert home.tolist() == [0, 1, 2] and (best > 0.99).all()
    positions, cells, _, _ = route_chunk(chunk, centroids, margin=0.0)  # its home only
    assert positions.tolist() == [0, 1, 2] and cells.tolist() == [0, 1, 2]


def test_cli_sharded_plan_in_worker_processes_writes_what_the_single_plan_writes(tmp_path):
    vectors, _, _ = synthetic_vectors(3000, 60, 0.03, dim=64, seed=5)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    write_run(single, vectors)
    shutil.copytree(single, sharded)
    result = CliRunner().invoke(dedup_command, ["--labels", str(single), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(dedup_command, ["--labels", str(sharded), "--no-progress",
                                                "--plan", "sharded", "--clusters", "8",
                                                "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "flat within 8 k-means cells (reach 0.045: " in result.output
    assert "search tasks, local)" in result.output
    for name in ("dedup.parquet", "dedup_pairs.parquet"):
        assert pq.read_table(sharded / name).equals(pq.read_table(single / name)), name
    assert pq.read_table(single / "dedup_pairs.parquet").num_rows >= 90
    result = CliRunner().invoke(dedup_command, ["--labels", str(sharded), "--plan", "sharded",
                                                "--reach", "2"])
    assert result.exit_code == 2 and "--reach" in result.output
    with pytest.raises(ConfigError, match="unknown engine"):
        ShardSpec(engine="spark")
    from distill import dedup as dedup_api

    with pytest.raises(ConfigError, match="unknown option 'assign'"):  # the rule before --reach
        dedup_api(sharded, plan="sharded", assign=2)


def test_ray_tasks_find_the_same_pairs(planted):
    ray = pytest.importorskip("ray")
    vectors, valid = planted
    local = sharded_pairs(vectors[:5000], valid[:5000], 0.95, ShardSpec(clusters=16),
                          progress=False)
    # address="local": a cluster of its own, never one another process left running here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = sharded_pairs(vectors[:5000], valid[:5000], 0.95,
                               ShardSpec(clusters=16, engine="ray"), progress=False)
    finally:
        ray.shutdown()
    assert _pairs(remote[:2]) == _pairs(local[:2]) and remote[3]["engine"] == "ray"
