"""clip_aesthetic on its real loading path, with a tiny random open_clip model and head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy.stats import spearmanr

from distill.similar import read_embeddings
from teachers import create_teacher
from teachers.clip_aesthetic import ClipAestheticTeacher, build_head, load_head
from tests.conftest import rng_image

TINY = Path(__file__).parent / "fixtures" / "distill-tiny-clip.json"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "laion-aesthetic-v1"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    open_clip.add_model_config(TINY)
    torch.manual_seed(0)
    model = open_clip.create_model("distill-tiny-clip", pretrained=None).eval()
    head = build_head("mlp", 32).eval()
    folder = tmp_path_factory.mktemp("clip")
    torch.save(model.state_dict(), folder / "clip.pt")
    torch.save(head.state_dict(), folder / "head.pth")
    return model, head, folder


@pytest.fixture(scope="module")
def teacher(tiny_files):
    _, _, folder = tiny_files
    return create_teacher("clip_aesthetic", arch="distill-tiny-clip",
                          clip_weights=str(folder / "clip.pt"), head_weights=str(folder / "head.pth"))


def test_loaded_teacher_equals_the_saved_random_networks(tiny_files, teacher, photo):
    model, head, _ = tiny_files
    images = [photo, rng_image(2, (200, 150))]
    output = teacher.score(images)
    with torch.inference_mode():
        batch = torch.stack([teacher.preprocess(image) for image in images])
        embedding = torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)
        expected = head(embedding).reshape(-1).double().numpy()
    np.testing.assert_array_equal(output.scores, expected)
    assert output.embeddings.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(output.embeddings, axis=1), 1.0, rtol=1e-5)
    assert len(teacher.provenance()["weights"]) == 2


def test_precomputed_embeddings_score_like_images(teacher, tiny_files, photo, tmp_path):
    _, _, folder = tiny_files
    from_images = teacher.score([photo, rng_image(3)])
    raw = from_images.embeddings * 3.0  # dumps are often unnormalised: the teacher normalises
    np.save(tmp_path / "emb.npy", raw)
    pq.write_table(pa.table({"key": ["a", "b"], "embedding": raw.tolist()}), tmp_path / "emb.parquet")
    embeddings_only = create_teacher("clip_aesthetic", head="mlp", embeddings_only=True,
                                     head_weights=str(folder / "head.pth"))
    for name in ("emb.npy", "emb.parquet"):
        _, matrix = read_embeddings(tmp_path / name)
        scores = embeddings_only.score_embeddings(matrix).scores
        np.testing.assert_allclose(scores, from_images.scores, rtol=1e-5)
    assert read_embeddings(tmp_path / "emb.parquet")[0] == ["a", "b"]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference is not beside this checkout")
@pytest.mark.parametrize("clip_name,dim", [("vit_b_32", 512), ("vit_l_14", 768)])
def test_laion_v1_head_orders_the_reference_ratings(clip_name, dim):
    head = load_head("linear", dim, REFERENCE / f"sa_0_4_{clip_name}_linear.pth")
    folder = REFERENCE / f"{clip_name}_embeddings"
    embeddings = np.stack([np.load(folder / f"rating{k}.npy").reshape(-1) for k in range(10)])
    scorer = ClipAestheticTeacher(clip_name, None, None, head, [])
    scores = scorer.score_embeddings(embeddings).scores
    assert spearmanr(np.arange(10), scores).statistic == pytest.approx(1.0)
    if clip_name == "vit_b_32":
        assert scores[0] == pytest.approx(-1.5, abs=0.5) and scores[9] == pytest.approx(11.0, abs=0.5)


def test_missing_openai_weights_is_one_clear_error(monkeypatch):
    from distill.errors import WeightsMissingError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError, match="distill weights fetch laion-aesthetic-mlp-l14"):
        create_teacher("clip_aesthetic")
