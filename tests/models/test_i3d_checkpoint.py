"""load_pytorch_i3d on files built from the real key list of rgb_imagenet.pt / flow_imagenet.pt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cmcl.models.i3d import InceptionI3d, load_pytorch_i3d

KEY_LIST = (
    Path(__file__).resolve().parents[2].parent / "shared/data/pytorch_i3d/state_dict_keys.json"
)
CHANNELS = {"rgb": 3, "flow": 2}


def state_from_key_list(modality: str, *, counters: bool = True, seed: int = 0):
    """Random tensors with the listed names, shapes and dtypes."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in json.loads(KEY_LIST.read_text())[modality]:
        if dtype == "int64":
            if counters:
                state[key] = torch.randint(0, 10_000, shape, generator=g, dtype=torch.int64)
        else:
            assert dtype == "float32", f"{key}: unexpected dtype {dtype} in {KEY_LIST}"
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope="module", params=["rgb", "flow"])
def checkpoint(request, tmp_path_factory):
    modality = request.param
    state = state_from_key_list(modality)
    path = tmp_path_factory.mktemp(modality) / f"{modality}_imagenet.pt"
    torch.save(state, path)
    return modality, path, state


def assert_loaded(model: InceptionI3d, state: dict, keys) -> None:
    own = model.state_dict()
    for key in keys:
        assert torch.equal(own[key], state[key]), key


def test_key_list_matches_model_exactly():
    for modality, channels in CHANNELS.items():
        listed = json.loads(KEY_LIST.read_text())[modality]
        own = InceptionI3d(num_classes=400, in_channels=channels).state_dict()
        assert [k for k, _, _ in listed] == list(own)
        assert [tuple(s) for _, s, _ in listed] == [tuple(v.shape) for v in own.values()]


def test_full_load_into_400_class_model(checkpoint):
    modality, path, state = checkpoint
    model = InceptionI3d(num_classes=400, in_channels=CHANNELS[modality])
    report = load_pytorch_i3d(model, path)
    assert set(report.loaded) == set(state) and report.dropped == () and report.kept == ()
    assert_loaded(model, state, state)


def test_logits_dropped_for_other_class_count(checkpoint):
    modality, path, state = checkpoint
    model = InceptionI3d(num_classes=8, in_channels=CHANNELS[modality])
    fresh_logits = model.logits.conv3d.weight.detach().clone()
    report = load_pytorch_i3d(model, path)
    assert set(report.dropped) == {"logits.conv3d.weight", "logits.conv3d.bias"}
    assert set(report.kept) == {"logits.conv3d.weight", "logits.conv3d.bias"}
    assert torch.equal(model.logits.conv3d.weight, fresh_logits)
    assert_loaded(model, state, report.loaded)
    assert len(report.loaded) == len(state) - 2


def test_logits_resized_when_num_classes_given(checkpoint):
    modality, path, _ = checkpoint
    model = InceptionI3d(num_classes=400, in_channels=CHANNELS[modality])
    report = load_pytorch_i3d(model, path, num_classes=8)
    assert model.num_classes == 8
    assert model.logits.conv3d.weight.shape == (8, 1024, 1, 1, 1)
    assert model.logits.conv3d.bias.shape == (8,)
    assert "logits.conv3d.weight" in report.dropped
    with torch.no_grad():
        assert model.eval()(torch.randn(1, CHANNELS[modality], 4, 16, 16)).shape == (1, 8)


def test_headless_model_drops_logits(checkpoint):
    modality, path, state = checkpoint
    model = InceptionI3d(num_classes=None, in_channels=CHANNELS[modality])
    report = load_pytorch_i3d(model, path)
    assert set(report.dropped) == {"logits.conv3d.weight", "logits.conv3d.bias"}
    assert report.kept == ()
    assert_loaded(model, state, report.loaded)


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    state = state_from_key_list("flow", counters=False)
    path = tmp_path / "old.pt"
    torch.save(state, path)
    model = InceptionI3d(num_classes=400, in_channels=2)
    report = load_pytorch_i3d(model, path)
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]
    assert len(counters) == 57  # 3 stem units + 9 blocks x 6 units
    assert sorted(report.kept) == sorted(counters)
    assert_loaded(model, state, state)


def test_wrong_shape_is_named(tmp_path):
    state = state_from_key_list("rgb")
    state["Mixed_4c.b1b.conv3d.weight"] = torch.zeros(224, 112, 3, 3, 1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_pytorch_i3d(InceptionI3d(), path)
    message = str(error.value)
    assert str(path) in message
    assert (
        "Mixed_4c.b1b.conv3d.weight file (224, 112, 3, 3, 1) vs model (224, 112, 3, 3, 3)"
        in message
    )


def test_rgb_file_into_flow_model_says_which_channels(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state_from_key_list("rgb"), path)
    with pytest.raises(ValueError, match="build the model with in_channels=3"):
        load_pytorch_i3d(InceptionI3d(in_channels=2), path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = state_from_key_list("rgb")
    del state["Mixed_5c.b3b.bn.running_var"]
    state["Mixed_6a.b0.conv3d.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_pytorch_i3d(InceptionI3d(), path)
    message = str(error.value)
    assert "missing keys (1): Mixed_5c.b3b.bn.running_var" in message
    assert "unexpected keys (1): Mixed_6a.b0.conv3d.weight" in message


def test_failed_load_leaves_model_untouched(tmp_path):
    state = state_from_key_list("rgb")
    del state["Conv3d_1a_7x7.bn.bias"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    model = InceptionI3d()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"Conv3d_1a_7x7\.bn\.bias"):
        load_pytorch_i3d(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_data_parallel_prefix_and_wrapped_state_dict(tmp_path):
    state = state_from_key_list("flow")
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = InceptionI3d(in_channels=2)
    load_pytorch_i3d(model, path)
    assert_loaded(model, state, state)


class NotATensor:
    pass


def test_file_with_code_objects_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": NotATensor()}, path)
    with pytest.raises(
        ValueError,
        match=r"cannot read I3D checkpoint .*pickled\.pt with torch\.load\(weights_only=True\)",
    ):
        load_pytorch_i3d(InceptionI3d(), path)


def test_not_a_state_dict_and_no_file(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="must hold a non-empty state dict"):
        load_pytorch_i3d(InceptionI3d(), path)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_pytorch_i3d(InceptionI3d(), tmp_path / "nope.pt")
