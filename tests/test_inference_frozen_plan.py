"""`freeze_inference_plan()`: the eval-mode plan keeps the weights it derives (a snapshot, like timm's
`reparameterize_model`), computes what the modules compute, and drops the snapshot whenever the model is trained,
loaded, moved or switched to another subnet."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from nasvit_hf import NASViTForImageClassification
from nasvit_hf.models import inference_nasvit
from nasvit_hf.models.inference_nasvit import NASViTInferencePlan
from tests.conftest import randomize_batchnorm_and_scales
from tests.test_inference_fast_path import (
    ATOL,
    assert_same_outputs,
    check_random_tiny_archs,
    plain_and_fast,
    plain_path,
)


@pytest.fixture
def frozen_tiny_model(tiny_config):
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    return model.freeze_inference_plan()


def count_derivations(monkeypatch) -> dict[str, int]:
    """Count how often the plan derives conv weights and transformer-layer tensors."""
    counts = {"conv": 0, "layer": 0}
    conv_tensors = NASViTInferencePlan._conv_bn_tensors
    layer_tensors = inference_nasvit._LayerTensors

    def counted_conv(*args, **kwargs):
        counts["conv"] += 1
        return conv_tensors(*args, **kwargs)

    class CountedLayer(layer_tensors):
        def __init__(self, *args, **kwargs):
            counts["layer"] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(NASViTInferencePlan, "_conv_bn_tensors", staticmethod(counted_conv))
    monkeypatch.setattr(inference_nasvit, "_LayerTensors", CountedLayer)
    return counts


@pytest.mark.parametrize("switchable_scaling", ["tokens", "width", "shared", "none"])
def test_frozen_plan_matches_the_modules_on_random_tiny_archs(tiny_config, switchable_scaling):
    # The second 3 reuses the snapshot the first one took; 16 reorders oneDNN weights.
    check_random_tiny_archs(tiny_config, switchable_scaling, batch_sizes=(3, 1, 16, 3), frozen=True)


@pytest.mark.parametrize("num_windows", [4, "auto", [1, 4, 1, 4]])
def test_frozen_plan_matches_the_modules_with_windowed_attention(frozen_tiny_model, num_windows):
    frozen_tiny_model.set_num_windows(num_windows)
    arch = frozen_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    for _ in range(2):
        assert_same_outputs(*plain_and_fast(frozen_tiny_model, pixel_values))


def test_frozen_plan_derives_each_weight_once(frozen_tiny_model, monkeypatch):
    counts = count_derivations(monkeypatch)
    arch = frozen_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    plain_and_fast(frozen_tiny_model, pixel_values)
    first = dict(counts)
    assert first["conv"] > 0 and first["layer"] > 0
    plain_and_fast(frozen_tiny_model, pixel_values)
    assert counts == first, "a frozen plan derived weights again on a second call of the same geometry"
    frozen_tiny_model.unfreeze_inference_plan()
    plain_and_fast(frozen_tiny_model, pixel_values)
    plain_and_fast(frozen_tiny_model, pixel_values)
    assert counts["conv"] == 3 * first["conv"], "an unfrozen plan must derive its weights at every call"


def test_a_frozen_plan_is_a_snapshot_until_unfrozen(frozen_tiny_model):
    """The documented contract: in-place edits after the first call are not seen; unfreezing sees them."""
    arch = frozen_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    _, before = plain_and_fast(frozen_tiny_model, pixel_values)
    frozen_tiny_model.nasvit.stem.conv.weight.data.mul_(1.5)
    plain, snapshot = plain_and_fast(frozen_tiny_model, pixel_values)
    assert (plain.logits - before.logits).abs().max() > 20 * ATOL, "the edit must change the modules' output"
    torch.testing.assert_close(snapshot.logits, before.logits, atol=0, rtol=0)
    assert frozen_tiny_model.unfreeze_inference_plan() is frozen_tiny_model
    assert_same_outputs(*plain_and_fast(frozen_tiny_model, pixel_values))


def _train_then_eval(model):
    model.train()
    model.eval()


def _load_state_dict(model):
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["nasvit.stem.conv.weight"].mul_(1.5)
    model.load_state_dict(state)


def _round_trip_dtype(model):
    model.double()
    model.float()


def _switch_subnet(model):
    arch = model.config.smallest_arch()
    model.set_active_subnet(arch)
    model.sample_max_subnet()


@pytest.mark.parametrize("refresh", [_train_then_eval, _load_state_dict, _round_trip_dtype, _switch_subnet])
def test_the_snapshot_is_dropped_by_train_load_move_and_subnet_switch(frozen_tiny_model, refresh, monkeypatch):
    arch = frozen_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    plain_and_fast(frozen_tiny_model, pixel_values)
    with torch.no_grad():  # an edit the snapshot does not see ...
        frozen_tiny_model.nasvit.stages[1].blocks[0].projection.conv.weight.mul_(1.5)
    counts = count_derivations(monkeypatch)
    refresh(frozen_tiny_model)  # ... until one of these drops it
    assert_same_outputs(*plain_and_fast(frozen_tiny_model, pixel_values))
    assert counts["conv"] > 0
    assert frozen_tiny_model.nasvit._frozen_plan is not None, "the model stays frozen: only the snapshot is dropped"


def test_a_frozen_model_can_be_copied_and_pickled_and_copies_keep_their_own_weights(frozen_tiny_model):
    arch = frozen_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(16, 3, arch["resolution"], arch["resolution"])  # large enough for oneDNN's layout
    _, fast = plain_and_fast(frozen_tiny_model, pixel_values)
    if torch.backends.mkldnn.is_available():
        assert any(key[1][0] == "onednn" for key in frozen_tiny_model.nasvit._frozen_plan), "no reordered weight"
    for clone in (copy.deepcopy(frozen_tiny_model), pickle.loads(pickle.dumps(frozen_tiny_model))):
        with torch.no_grad():
            torch.testing.assert_close(clone(pixel_values).logits, fast.logits, atol=0, rtol=0)
            clone.nasvit.stem.conv.weight.mul_(2.0)
        clone.unfreeze_inference_plan()
        with torch.no_grad():
            assert (clone(pixel_values).logits - fast.logits).abs().max() > 20 * ATOL
    with torch.no_grad():  # the original's snapshot and weights are its own
        torch.testing.assert_close(frozen_tiny_model(pixel_values).logits, fast.logits, atol=0, rtol=0)


def test_freezing_does_not_change_saved_weights_or_the_modules_path(frozen_tiny_model, tmp_path):
    arch = frozen_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
    keys = set(frozen_tiny_model.state_dict())
    plain_and_fast(frozen_tiny_model, pixel_values)
    assert set(frozen_tiny_model.state_dict()) == keys
    frozen_tiny_model.save_pretrained(tmp_path)
    loaded = NASViTForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.nasvit._frozen_plan is None, "freezing is a runtime choice, not saved"
    with torch.no_grad(), plain_path(frozen_tiny_model):
        torch.testing.assert_close(loaded(pixel_values).logits, frozen_tiny_model(pixel_values).logits)


def test_segmentation_models_freeze_their_backbone(tiny_config):
    from nasvit_hf import NASViTForSemanticSegmentation

    torch.manual_seed(0)
    model = NASViTForSemanticSegmentation(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        model.nasvit.inference_fast_path = False
        plain = model(pixel_values).logits
        model.nasvit.inference_fast_path = True
        assert model.freeze_inference_plan() is model
        assert model.nasvit._frozen_plan == {}
        for _ in range(2):
            torch.testing.assert_close(model(pixel_values).logits, plain, atol=ATOL, rtol=0)
    assert model.nasvit._frozen_plan, "the backbone's plan kept its derived weights"
