"""Head and controller artifacts: safetensors + JSON metadata bound to the foundation's fingerprint."""

import json

import pytest
import torch

from hra.errors import FoundationMismatch, InvalidArtifact
from hra.foundation import foundation_fingerprint
from hra.adapter.artifacts import (
    controller_from_bytes,
    head_from_bytes,
    head_to_bytes,
    read_metadata,
    save_controller,
    load_controller,
)
from tests.hra.fake_backbone import make_fake_foundation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def foundation():
    return make_fake_foundation()


def _trained(head, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    return head


@pytest.mark.parametrize("head_type", ["linear", "ffn"])
def test_head_round_trip_keeps_weights_and_metadata(foundation, head_type):
    head = _trained(foundation.new_head(head_type, hidden=16))
    data = head_to_bytes(head, foundation, {"speaker_id": "s1", "utterances": 50})
    back = head_from_bytes(data, foundation)
    assert back.head_type == head_type and back.config == head.config
    for (name, a), (_, b) in zip(head.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    meta = read_metadata(data)
    assert meta["metadata"] == {"speaker_id": "s1", "utterances": 50}
    assert meta["foundation_fingerprint"] == foundation.fingerprint
    assert meta["backbone_fingerprint"] == foundation.backbone.fingerprint
    assert meta["controller_fingerprint"] == foundation.controller_fingerprint
    assert meta["num_parameters"] == head.num_parameters and meta["created_at"]


def test_head_from_another_controller_is_refused(foundation):
    other = make_fake_foundation(seed=0)
    with torch.no_grad():
        other.controller.u.add_(0.1)
    other = type(other).build(other.backbone, other.controller)
    data = head_to_bytes(_trained(other.new_head("linear")), other, {})
    with pytest.raises(FoundationMismatch, match="controller"):
        head_from_bytes(data, foundation)


def test_head_from_another_backbone_is_refused(foundation):
    other = make_fake_foundation(seed=5)
    data = head_to_bytes(other.new_head("linear"), other, {})
    with pytest.raises(FoundationMismatch, match="backbone"):
        head_from_bytes(data, foundation)


def test_garbage_and_wrong_kind_are_invalid_artifacts(foundation):
    with pytest.raises(InvalidArtifact):
        head_from_bytes(b"not a safetensors file at all", foundation)
    with pytest.raises(InvalidArtifact):
        head_from_bytes(foundation.controller_artifact(), foundation)


def test_foundation_fingerprint_combines_backbone_and_controller(foundation):
    assert foundation.fingerprint == foundation_fingerprint(
        foundation.backbone.fingerprint, foundation.controller.fingerprint()
    )


def test_controller_round_trip(foundation, tmp_path):
    back = controller_from_bytes(foundation.controller_artifact())
    assert back.config == foundation.controller.config
    assert back.fingerprint() == foundation.controller_fingerprint
    save_controller(foundation.controller, tmp_path / "c.safetensors", {"voices": 3})
    assert load_controller(tmp_path / "c.safetensors").fingerprint() == foundation.controller_fingerprint


def test_describe_and_backbone_artifact(foundation):
    info = foundation.describe()
    json.dumps(info)
    assert info["fingerprint"] == foundation.fingerprint
    assert info["controller"]["config"]["d_controller"] == 8
    assert info["heads"]["linear"]["parameters"] == 8 * 32
    assert read_metadata(foundation.backbone_artifact())["fingerprint"] == foundation.backbone.fingerprint
