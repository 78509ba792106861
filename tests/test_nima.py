"""NIMA runs pyiqa's arch from a local file only: random weights, saved and loaded back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teachers import create_teacher
from teachers.nima import OfflineNIMA
from tests.conftest import rng_image


@pytest.fixture(scope="module")
def saved_random_nima(tmp_path_factory):
    torch.manual_seed(0)
    net = OfflineNIMA("inception_resnet_v2").eval()
    path = tmp_path_factory.mktemp("nima") / "nima_random.pth"
    torch.save({"params": net.state_dict()}, path)  # pyiqa's checkpoint layout
    return net, path


def test_saved_and_loaded_nima_gives_identical_outputs(saved_random_nima, photo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # loading must not need the hub
    net, path = saved_random_nima
    teacher = create_teacher("nima", weights_path=str(path))
    images = [photo, rng_image(1, (320, 240))]
    output = teacher.score(images)

    batch = torch.stack([teacher._prepare(image) for image in images])
    with torch.inference_mode():
        expected_mos, expected_dist = net(batch, return_mos=True, return_dist=True)
    np.testing.assert_array_equal(output.scores, expected_mos.reshape(-1).double().numpy())
    np.testing.assert_array_equal(output.distributions, expected_dist.double().numpy())
    assert output.distributions.shape == (2, 10)
    np.testing.assert_allclose(output.distributions.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all((output.scores >= 1) & (output.scores <= 10))
    assert teacher.spec.input_size == 299 and teacher.spec.higher_is_better


def test_nima_provenance_names_the_checkpoint(saved_random_nima):
    _, path = saved_random_nima
    provenance = create_teacher("nima", weights_path=str(path)).provenance()
    (record,) = provenance["weights"]
    assert record["path"] == str(path) and len(record["sha256"]) == 64
    assert provenance["backbone"] == "inception_resnet_v2"
    assert {"torch", "pyiqa", "timm"} <= set(provenance["libraries"])


def test_unknown_backbone_is_a_config_error():
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="backbone"):
        create_teacher("nima", backbone="resnet9000")
