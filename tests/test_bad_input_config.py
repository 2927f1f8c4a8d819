"""Bad config values (a typo, or a tampered config.json): each is refused with a ValueError naming the field.

Every row builds a `NASViTConfig` from the tiny preset space with one bad value; the message must contain the phrase.
Numpy integers and floats (what a config built from numpy code holds) are accepted and stored as plain Python values.
"""

import copy
import json

import numpy as np
import pytest

from nasvit_hf import NASViTConfig
from nasvit_hf.presets import get_search_space

TINY = get_search_space("tiny")


def _space(mutate):
    space = copy.deepcopy(TINY)
    mutate(space)
    return space


BAD_SEARCH_SPACES = [
    ("se as a truthy string", lambda s: s["mb3"].update(se="no"), "['se'] must be true or false"),
    ("se as an int", lambda s: s["mb3"].update(se=1), "['se'] must be true or false"),
    ("stride 0 in a body stage", lambda s: s["mb2"].update(s=0), "['s'] (stride) must be the integer 1 or 2"),
    ("stride 0 in the stem", lambda s: s["first_conv"].update(s=0), "['s'] (stride) must be the integer 1 or 2"),
    ("stride 3", lambda s: s["mb4"].update(s=3), "must be the integer 1 or 2"),
    ("stride True", lambda s: s["mb4"].update(s=True), "must be the integer 1 or 2"),
    ("stride as a string", lambda s: s["mb4"].update(s="2"), "must be the integer 1 or 2"),
    ("resolution 100000", lambda s: s.update(resolutions=[100000]), "in [16, 4096]"),
    ("resolution 0", lambda s: s.update(resolutions=[0]), "positive integers"),
    ("resolution as a string", lambda s: s.update(resolutions=["224"]), "non-empty list of integers"),
    ("resolution as a float", lambda s: s.update(resolutions=[32.0]), "non-empty list of integers"),
    ("depth 10^6", lambda s: s["mb1"].update(d=[10**6]), "in [1, 64]"),
    ("negative width", lambda s: s["mb1"].update(c=[-8]), "positive integers"),
    ("width 10^6", lambda s: s["last_conv"].update(c=[10**6]), "in [1, 16384]"),
    ("kernel 33", lambda s: s["mb1"].update(k=[33]), "in [1, 31]"),
    ("expand ratio 100", lambda s: s["mb2"].update(t=[100]), "in [1, 32]"),
    ("bool in a width list", lambda s: s["mb1"].update(c=[True]), "non-empty list of integers"),
    ("mlp ratio 1000", lambda s: s["mb4"].update(mlp_ratio=[1000]), "in [1, 32]"),
    ("10^6 windows", lambda s: s["mb4"].update(num_windows=[10**6]), "in [1, 4096]"),
]


@pytest.mark.parametrize("case, mutate, phrase", BAD_SEARCH_SPACES, ids=[row[0] for row in BAD_SEARCH_SPACES])
def test_bad_search_space_value_is_refused(case, mutate, phrase):
    with pytest.raises(ValueError) as error:
        NASViTConfig(search_space=_space(mutate))
    assert phrase in str(error.value)


BAD_FIELDS = [
    ("num_channels", 0, "num_channels must be an integer [1, 256]"),
    ("num_channels", "3", "num_channels must be an integer"),
    ("num_channels", 3.0, "num_channels must be an integer"),
    ("head_dim", -8, "head_dim must be an integer [1, 1024]"),
    ("value_expansion", True, "value_expansion must be an integer"),
    ("max_relative_position", 10**6, "max_relative_position must be an integer [1, 512]"),
    ("switchable_scaling_depth_slots", 10**9, "switchable_scaling_depth_slots must be an integer [1, 1024]"),
    ("decoder_hidden_size", 0, "decoder_hidden_size must be an integer [1, 65536]"),
    ("semantic_loss_ignore_index", "255", "semantic_loss_ignore_index must be an integer"),
    ("batch_norm_eps", -1e-5, "batch_norm_eps must be a finite number in (0, 1]"),
    ("batch_norm_eps", 0.0, "batch_norm_eps must be a finite number in (0, 1]"),
    ("layer_norm_eps", "1e-5", "layer_norm_eps must be a number"),
    ("layer_norm_eps", float("nan"), "layer_norm_eps must be a finite number"),
    ("batch_norm_momentum", 1.5, "batch_norm_momentum must be a finite number in [0, 1]"),
    ("drop_path_rate", 1.0, "drop_path_rate must be a finite number in [0, 1)"),
    ("drop_connect_rate", -0.1, "drop_connect_rate must be a finite number in [0, 1)"),
    ("classifier_dropout", "0.1", "classifier_dropout must be a number"),
    ("initializer_range", float("inf"), "initializer_range must be a finite number"),
    ("switchable_scaling_init", -1.0, "switchable_scaling_init must be a finite number in [0, 100]"),
    ("switchable_scaling", True, "switchable_scaling must be one of"),
    ("num_windows", 0, "num_windows must be the total number of windows k"),
    ("num_windows", "4", "num_windows must be the total number of windows k"),
    ("num_labels", -1, "num_labels must be an integer [0, 1000000]"),
    ("num_labels", "10", "num_labels must be an integer"),
]


@pytest.mark.parametrize("field, value, phrase", BAD_FIELDS, ids=[f"{row[0]}={row[1]!r}" for row in BAD_FIELDS])
def test_bad_scalar_field_is_refused(field, value, phrase):
    with pytest.raises(ValueError) as error:
        NASViTConfig(search_space=TINY, **{field: value})
    assert phrase in str(error.value)


def test_tampered_config_json_is_refused_on_load(tmp_path):
    config = NASViTConfig(search_space=TINY, num_labels=4)
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["search_space"]["mb3"]["se"] = "no"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"\['se'\] must be true or false"):
        NASViTConfig.from_pretrained(tmp_path)


def test_numpy_numbers_are_accepted_and_stored_as_plain_python():
    space = copy.deepcopy(TINY)
    space["resolutions"] = list(np.array([32, 48]))
    space["mb1"]["d"] = [np.int64(1), np.int32(2)]
    space["mb3"]["se"] = np.bool_(True)
    space["mb4"]["s"] = np.int64(2)
    largest = NASViTConfig(search_space=TINY).largest_arch()
    arch = {
        key: ([np.int64(v) for v in value] if isinstance(value, list) else np.int64(value))
        for key, value in largest.items()
    }
    arch["resolution"] = np.int64(48)
    config = NASViTConfig(
        search_space=space,
        arch=arch,
        num_labels=np.int64(4),
        head_dim=np.int64(8),
        batch_norm_eps=np.float32(1e-5),
        num_windows=np.int64(1),
    )
    assert config.search_space["resolutions"] == [32, 48] and config.arch["resolution"] == 48
    assert type(config.arch["width"][0]) is int and type(config.head_dim) is int and config.num_labels == 4
    assert config.search_space["mb3"]["se"] is True and type(config.batch_norm_eps) is float
    json.dumps(config.to_dict())  # plain Python values all the way down
