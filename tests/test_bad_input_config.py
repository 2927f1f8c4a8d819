"""Bad config values (a typo, or a tampered config.json): each is refused with a ValueError naming the field.

Every row builds a `NASViTConfig` from the tiny preset space with one bad value; the message must contain the phrase.
Numpy integers and floats (what a config built from numpy code holds) are accepted and stored as plain Python values.
"""

import copy
import json

import numpy as np
import pytest
import torch

from nasvit_hf import NASViTConfig
from nasvit_hf.hub import resolve_named_archs
from nasvit_hf.presets import get_named_arch, get_search_space
from nasvit_hf.search import ArchEncoder, measure_latency, torch_threads
from nasvit_hf.training import ArchSampler, SandwichConfig, alpha_divergence
from nasvit_hf.training.schedule import build_lr_scheduler

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


# A tampered config.json: each key replaced in the saved file, then loaded (the error names the key, not a line deep
# inside transformers).
TAMPERED_CONFIG_JSON = [
    ("search_space", "tiny", "got the string 'tiny'; for a preset, pass nasvit_hf.presets.get_search_space"),
    ("search_space", [1, 2], "search_space must be a dict"),
    ("id2label", ["cat", "dog"], "id2label must be a mapping of class index to name"),
    ("id2label", {"x": "cat"}, "id2label keys must be class indices"),
    ("id2label", {"-1": "cat"}, "id2label keys must be class indices"),
    ("label2id", ["cat"], "label2id must be a mapping of class name to index"),
    ("dtype", "float99", "dtype must be one of ['float32', 'float16', 'bfloat16', 'float64'] or 'auto'"),
    ("torch_dtype", "float99", "torch_dtype must be one of"),
    ("dtype", 5, "dtype must be one of"),
    ("num_labels", "3", "num_labels must be an integer"),
    ("arch", "largest", "arch must be a dict"),
]


@pytest.mark.parametrize(
    "key, value, phrase", TAMPERED_CONFIG_JSON, ids=[f"{row[0]}={row[1]!r}" for row in TAMPERED_CONFIG_JSON]
)
def test_tampered_config_json_key_is_named_on_load(tmp_path, key, value, phrase):
    NASViTConfig(search_space=TINY, num_labels=2).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw[key] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError) as error:
        NASViTConfig.from_pretrained(tmp_path)
    assert phrase in str(error.value)


def test_label_maps_and_dtypes_that_transformers_writes_still_load(tmp_path):
    config = NASViTConfig(search_space=TINY, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    config.dtype = torch.bfloat16
    config.save_pretrained(tmp_path)
    loaded = NASViTConfig.from_pretrained(tmp_path)
    assert loaded.id2label == {0: "cat", 1: "dog"} and loaded.num_labels == 2
    assert NASViTConfig(search_space=TINY, dtype=torch.float16).dtype == torch.float16


def _counters():
    from nasvit_hf import NASViTForImageClassification
    from nasvit_hf.macs import count_macs, count_parameters, count_segmentation_macs

    config = NASViTConfig(search_space=TINY, num_labels=3)
    model = NASViTForImageClassification(NASViTConfig(search_space=get_search_space("tiny"), num_labels=3))
    return config, model, count_macs, count_parameters, count_segmentation_macs


# (case, call(config, model, count_macs, count_parameters, count_segmentation_macs), error type, phrase)
BAD_COUNTER_CALLS = [
    ("count_macs(None)", lambda c, m, macs, params, seg: macs(None), TypeError, "count_macs takes a NASViTConfig"),
    ("count_macs(dict)", lambda c, m, macs, params, seg: macs(c.to_dict()), TypeError, "got dict"),
    ("count_macs(model)", lambda c, m, macs, params, seg: macs(m), TypeError, "pass model.config"),
    ("count_macs num_labels=-5", lambda c, m, macs, params, seg: macs(c, num_labels=-5), ValueError, "num_labels must be in [0, 1000000]"),
    ("count_macs num_labels='x'", lambda c, m, macs, params, seg: macs(c, num_labels="x"), TypeError, "num_labels must be an int"),
    ("count_macs arch=str", lambda c, m, macs, params, seg: macs(c, "largest"), ValueError, "arch must be a dict"),
    ("count_parameters(None)", lambda c, m, macs, params, seg: params(None), TypeError, "count_parameters takes a NASViTConfig"),
    ("count_parameters(model)", lambda c, m, macs, params, seg: params(m), TypeError, "pass model.config"),
    ("count_parameters num_labels=-5", lambda c, m, macs, params, seg: params(c, num_labels=-5), ValueError, "num_labels must be in"),
    ("count_parameters num_labels=2.5", lambda c, m, macs, params, seg: params(c, num_labels=2.5), TypeError, "num_labels must be an int"),
    ("segmentation image_size='64'", lambda c, m, macs, params, seg: seg(c, image_size="64"), TypeError, "image_size must be a positive int"),
    ("segmentation image_size=(64,)", lambda c, m, macs, params, seg: seg(c, image_size=(64,)), ValueError, "(height, width) pair"),
    ("segmentation image_size=64.5", lambda c, m, macs, params, seg: seg(c, image_size=64.5), TypeError, "image_size must be a positive int"),
    ("segmentation image_size=(0, 64)", lambda c, m, macs, params, seg: seg(c, image_size=(0, 64)), ValueError, "image_size must be positive"),
    ("segmentation image_size=True", lambda c, m, macs, params, seg: seg(c, image_size=True), TypeError, "image_size must be a positive int"),
    ("segmentation num_labels=-1", lambda c, m, macs, params, seg: seg(c, num_labels=-1), ValueError, "num_labels must be in"),
    ("segmentation decoder_hidden_size=0", lambda c, m, macs, params, seg: seg(c, decoder_hidden_size=0), ValueError, "decoder_hidden_size must be a positive int"),
    ("segmentation(model)", lambda c, m, macs, params, seg: seg(m), TypeError, "pass model.config"),
]  # fmt: skip


@pytest.mark.parametrize("case, call, error, phrase", BAD_COUNTER_CALLS, ids=[row[0] for row in BAD_COUNTER_CALLS])
def test_bad_counter_arguments_are_named(case, call, error, phrase):
    with pytest.raises(error) as raised:
        call(*_counters())
    assert phrase in str(raised.value)


def test_counters_accept_numpy_label_counts_and_image_size_pairs():
    config, _, macs, params, seg = _counters()
    assert macs(config, num_labels=np.int64(3)) == macs(config) and params(config, num_labels=0) < params(config)
    assert seg(config, image_size=[64, 64]) == seg(config, image_size=64)


def _library():
    from nasvit_hf import NASViTForImageClassification

    config = NASViTConfig(search_space=TINY, num_labels=3)
    subnet = NASViTForImageClassification(config).extract_subnet(config.smallest_arch()).eval()
    return config, subnet


def _optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


# (case, call(config, subnet), error type, phrase): the library's other entry points, with the arguments that used to
# fail deep inside torch / numpy (RuntimeError, IndexError, KeyError, AttributeError) or answer wrongly
BAD_LIBRARY_CALLS = [
    ("get_search_space('tiyn')", lambda c, s: get_search_space("tiyn"), ValueError, "did you mean 'tiny'"),
    ("get_search_space(None)", lambda c, s: get_search_space(None), ValueError, "unknown search space None"),
    ("get_named_arch(3)", lambda c, s: get_named_arch(3), ValueError, "unknown subnet name 3"),
    ("ArchSampler(num_random=-1)", lambda c, s: ArchSampler(c, -1), ValueError, "num_random must be a non-negative integer"),
    ("ArchSampler(seed='x')", lambda c, s: ArchSampler(c, 2, seed="x"), ValueError, "seed must be a non-negative integer"),
    ("SandwichConfig(max_grad_norm=nan)", lambda c, s: SandwichConfig(max_grad_norm=float("nan")), ValueError, "max_grad_norm must be a finite number"),
    ("SandwichConfig(kd_temperature=0)", lambda c, s: SandwichConfig(kd_temperature=0.0), ValueError, "kd_temperature must be in (0, inf)"),
    ("alpha_divergence(shape mismatch)", lambda c, s: alpha_divergence(
        torch.zeros(2, 3), torch.zeros(2, 4), 0.5), ValueError, "must both have shape"),
    ("alpha_divergence(iw_clip=-1)", lambda c, s: alpha_divergence(
        torch.zeros(2, 3), torch.zeros(2, 3), 0.5, iw_clip=-1), ValueError, "iw_clip must be a finite positive number"),
    ("build_lr_scheduler(num_training_steps=0)", lambda c, s: build_lr_scheduler(
        _optimizer(), "cosine", 0, 0), ValueError, "num_training_steps must be an integer >= 1"),
    ("build_lr_scheduler(num_warmup_steps=-1)", lambda c, s: build_lr_scheduler(
        _optimizer(), "linear", -1, 10), ValueError, "num_warmup_steps must be an integer >= 0"),
    ("ArchEncoder.decode(short row)", lambda c, s: ArchEncoder(c.search_space).decode(
        np.zeros(2, np.int64)), ValueError, "a gene row holds"),
    ("ArchEncoder.decode(index 99)", lambda c, s: (lambda e: e.decode(np.full(e.num_genes, 99)))(
        ArchEncoder(c.search_space)), ValueError, "it indexes"),
    ("ArchEncoder.encode({})", lambda c, s: ArchEncoder(c.search_space).encode({}), ValueError, "arch must be a dict with keys"),
    ("measure_latency(num_threads=-3)", lambda c, s: measure_latency(s, 32, num_threads=-3), ValueError, "num_threads must be a positive integer"),
    ("measure_latency(resolution='32')", lambda c, s: measure_latency(s, "32"), ValueError, "resolution must be a positive int"),
    ("torch_threads(-3)", lambda c, s: torch_threads(-3).__enter__(), ValueError, "num_threads must be a positive integer"),
    ("resolve_named_archs('a0')", lambda c, s: resolve_named_archs("a0"), ValueError, "names must be a list"),
]  # fmt: skip


@pytest.mark.parametrize("bad", [0, -3, True, 1.5, "2", np.float64(2.0)])
def test_every_thread_setting_refuses_what_is_not_a_positive_integer_the_same_way(bad):
    from nasvit_hf.search.runtimes import RuntimeSpec, check_num_threads

    for call in (check_num_threads, lambda n: RuntimeSpec(num_threads=n), lambda n: torch_threads(n).__enter__()):
        with pytest.raises(ValueError, match=r"num_threads must be a positive integer or None \(torch's default\)"):
            call(bad)


def test_every_thread_setting_takes_numpy_integers_as_ints():
    from nasvit_hf.search.runtimes import RuntimeSpec, check_num_threads

    assert check_num_threads(np.int64(2)) == 2 and type(check_num_threads(np.int64(2))) is int
    spec = RuntimeSpec(num_threads=np.int32(1))
    assert spec.num_threads == 1 and type(spec.num_threads) is int
    previous = torch.get_num_threads()
    with torch_threads(np.int64(1)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == previous
    config, subnet = _library()
    resolution = config.smallest_arch()["resolution"]
    assert measure_latency(subnet, resolution, warmup=0, repeats=1, num_threads=np.int64(1)).num_threads == 1


@pytest.mark.parametrize("case, call, error, phrase", BAD_LIBRARY_CALLS, ids=[row[0] for row in BAD_LIBRARY_CALLS])
def test_bad_library_arguments_are_named(case, call, error, phrase):
    with pytest.raises(error) as raised:
        call(*_library())
    assert phrase in str(raised.value)
