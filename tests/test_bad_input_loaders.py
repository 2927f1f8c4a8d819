"""The package's own loaders refuse checkpoints whose weights do not match their config.

`load_supernet` (search and `recipes/extract.py`), `load_subnet_for_export` (`recipes/deploy.py`) and the loader they
share (`nasvit_hf.loading.load_nasvit_model`) are given a
folder written by `save_pretrained` whose `model.safetensors` was then damaged (a weight removed, one added, one
reshaped, a dtype-compatible but foreign file): each is refused with a `CheckpointMismatchError` (a `ValueError`)
naming the key, instead of running with random weights. An intact folder loads with identical weights.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nasvit_hf.deploy import load_subnet_for_export
from nasvit_hf.loading import CheckpointMismatchError, load_nasvit_model
from nasvit_hf.search import load_supernet
from tests._training_helpers import micro_model

STEM_KEY = "nasvit.stem.conv.weight"
CLASSIFIER_KEY = "classifier.weight"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders")
    supernet = micro_model(num_labels=4).eval()
    supernet.save_pretrained(root / "supernet")
    subnet = supernet.extract_subnet(supernet.config.smallest_arch()).eval()
    subnet.save_pretrained(root / "subnet")
    return {
        "supernet": root / "supernet",
        "subnet": root / "subnet",
        "models": {"supernet": supernet, "subnet": subnet},
    }


def _drop(key):
    def damage(state):
        del state[key]

    return damage


def _add(key):
    def damage(state):
        state[key] = torch.zeros(3)

    return damage


def _reshape(key):
    def damage(state):
        state[key] = torch.zeros(*[size + 1 for size in state[key].shape])

    return damage


def _keep_only(prefix):
    def damage(state):
        for key in [key for key in state if not key.startswith(prefix)]:
            del state[key]

    return damage


DAMAGES = [
    ("missing stem weight", _drop(STEM_KEY), f"1 missing weights ({STEM_KEY})"),
    ("missing classifier", _drop(CLASSIFIER_KEY), f"1 missing weights ({CLASSIFIER_KEY})"),
    ("unexpected weight", _add("extra.adapter.weight"), "1 unexpected weights (extra.adapter.weight)"),
    ("reshaped weight", _reshape(CLASSIFIER_KEY), f"1 weights of another shape ({CLASSIFIER_KEY})"),
    ("only the stem left", _keep_only("nasvit.stem."), "more)"),
]
LOADERS = {
    "load_supernet": ("supernet", load_supernet),
    "load_subnet_for_export": ("subnet", load_subnet_for_export),
    "load_nasvit_model": ("supernet", load_nasvit_model),
}


@pytest.mark.parametrize("loader_name", sorted(LOADERS))
@pytest.mark.parametrize("case, damage, phrase", DAMAGES, ids=[row[0] for row in DAMAGES])
def test_damaged_checkpoint_is_refused(folders, tmp_path, loader_name, case, damage, phrase):
    kind, loader = LOADERS[loader_name]
    folder = tmp_path / kind
    shutil.copytree(folders[kind], folder)
    state = load_file(folder / "model.safetensors")
    damage(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as error:
        loader(folder)
    assert phrase in str(error.value) and "does not match" in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("loader_name", sorted(LOADERS))
def test_intact_checkpoint_loads_with_identical_weights(folders, loader_name):
    kind, loader = LOADERS[loader_name]
    loaded = loader(folders[kind])
    expected = folders["models"][kind].state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_supernet_folder_without_weights_names_the_fix(folders, tmp_path):
    folder = tmp_path / "no_weights"
    shutil.copytree(folders["supernet"], folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="cannot load the NASViT weights .* Pass a folder written by save_pretrained"):
        load_supernet(folder)


def test_the_old_loader_names_are_the_loading_modules_functions():
    from nasvit_hf import loading
    from nasvit_hf.deploy import common
    from nasvit_hf.search import runner

    assert runner.load_supernet is loading.load_supernet
    assert runner.load_supernet_processor is loading.load_supernet_processor
    assert common._load_model is loading.load_nasvit_model


# ----------------------------------------------------------------------------------------------------------------------
# The converter's input: files that are not what they claim. Trust (`trust_checkpoint`) is suggested only for a pickle
# that holds Python objects, where it helps; a damaged file is called damaged, with or without trust.
# ----------------------------------------------------------------------------------------------------------------------
class _PythonObject:
    pass


def _write(name: str, content: bytes):
    def make(root):
        (root / name).write_bytes(content)
        return root / name

    return make


def _saved(name: str, value):
    def make(root):
        torch.save(value, root / name)
        return root / name

    return make


# (case, file maker, trust, phrase; "trust_checkpoint" in the message exactly when the phrase names it)
CHECKPOINT_FILES = [
    ("random bytes", _write("c.pth", bytes(range(256)) * 4), False, "damaged or not a checkpoint (neither"),
    ("random bytes, trusted", _write("c.pth", bytes(range(256)) * 4), True, "damaged or not a checkpoint (neither"),
    ("an empty file", _write("c.pth", b""), False, "damaged or not a checkpoint"),
    ("a broken pickle", _write("c.pth", b"\x80" + bytes(range(170, 256)) * 8), False, "damaged or not a checkpoint"),
    ("a broken pickle, trusted", _write("c.pth", b"\x80" + bytes(range(170, 256)) * 8), True, "damaged or not a checkpoint"),
    ("a zip that is not torch's", _write("c.pth", b"PK\x05\x06" + bytes(18)), False, "damaged or not a checkpoint"),
    ("damaged safetensors", _write("c.safetensors", bytes(range(200))), False, "as a safetensors file"),
    ("a pickle holding Python objects", _saved("c.pth", {"args": _PythonObject()}), False, "pass trust_checkpoint=True"),
    ("a list", _saved("c.pth", [1, 2]), False, "expected a checkpoint dict or a state dict, got list"),
    ("a dict of other weights", _saved("c.pth", {"fc.weight": torch.zeros(2)}), False, "not a reference NASViT checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize("case, make, trust, phrase", CHECKPOINT_FILES, ids=[row[0] for row in CHECKPOINT_FILES])
def test_converter_input_that_is_not_a_reference_checkpoint_is_refused(tmp_path, case, make, trust, phrase):
    from nasvit_hf.conversion import NotANASViTCheckpointError, load_reference_checkpoint

    with pytest.raises(NotANASViTCheckpointError) as error:
        load_reference_checkpoint(make(tmp_path), trust_checkpoint=trust)
    message = str(error.value)
    assert phrase in message and isinstance(error.value, ValueError)
    assert ("trust_checkpoint" in message) == ("trust_checkpoint" in phrase), message


# ----------------------------------------------------------------------------------------------------------------------
# holdout.json (what search and extraction rank subnets on): a damaged or hand-edited file is refused when it is loaded,
# naming the file and what is wrong, instead of an IndexError deep inside `datasets`.
# ----------------------------------------------------------------------------------------------------------------------
def _valid_holdout() -> dict:
    return {
        "per_class": 1,
        "seed": 0,
        "label_column": "label",
        "image_column": "image",
        "source": {"dataset": "digits", "split": "train", "num_rows": 10},
        "indices": [2, 7],
        "labels": [0, 1],
        "file_ids": None,
        "format": 1,
    }


def _holdout(**changes):
    return json.dumps({**_valid_holdout(), **changes})


HOLDOUT_DAMAGES = [
    ("indices beyond the training rows", _holdout(indices=[2, 5000]), "indices outside the 10 training rows"),
    ("negative index", _holdout(indices=[-1, 2]), "indices outside"),
    ("repeated index", _holdout(indices=[2, 2]), "repeated indices"),
    ("labels as strings", _holdout(labels=["cat", "dog"]), "labels[0] must be of type int"),
    ("indices as a string", _holdout(indices="2,7"), "indices must be of type list"),
    ("fewer labels than indices", _holdout(labels=[0]), "1 labels for 2 indices"),
    ("file ids of another length", _holdout(file_ids=["a.png"]), "1 file ids for 2 indices"),
    ("source without num_rows", _holdout(source={"dataset": "digits"}), "source.num_rows is None"),
    ("data_dir as a number", _holdout(source={"dataset": "digits", "num_rows": 10, "data_dir": 5}), "source.data_dir is 5"),
    ("per_class as a string", _holdout(per_class="1"), "per_class must be of type int"),
    ("a JSON list", "[1, 2]", "it holds a list"),
    ("not JSON", "indices: [1, 2]", "invalid JSON"),
]  # fmt: skip


@pytest.mark.parametrize("case, text, phrase", HOLDOUT_DAMAGES, ids=[row[0] for row in HOLDOUT_DAMAGES])
def test_damaged_holdout_file_is_refused_when_loaded(tmp_path, case, text, phrase):
    from nasvit_hf.data import HoldoutSplit

    (tmp_path / "holdout.json").write_text(text)
    with pytest.raises(ValueError) as error:
        HoldoutSplit.load(tmp_path / "holdout.json")
    assert phrase in str(error.value) and "holdout.json" in str(error.value)


def test_a_valid_holdout_file_loads():
    from nasvit_hf.data import HoldoutSplit

    assert HoldoutSplit(**_valid_holdout()).indices == [2, 7]


# ----------------------------------------------------------------------------------------------------------------------
# A search's results folder: a resumed search reads its own records back; a damaged or hand-edited record is refused
# naming the file, and a folder holding result files but no run.json (not a search's) is never written into.
# ----------------------------------------------------------------------------------------------------------------------
def _search_run(folder):
    from nasvit_hf.search import SearchConfig, SearchRun

    config = SearchConfig.from_dict(
        {
            "num_threads": 1,
            "data": {"max_evaluation_samples": 20},
            "predictor": {"num_subnets": 4},
            "budgets": [{"name": "a0", "macs_fraction": 0.0}],
        }  # fmt: skip
    )
    return SearchRun(micro_model(num_labels=10), config, folder, supernet_name="s", config_name="c")


def _started(folder):
    run = _search_run(folder)
    run._write_run_file()
    run.evaluator.sampled_archs()
    return folder


def _damage(name, text):
    def damage(folder):
        _started(folder)
        (folder / name).write_text(text)

    return damage


SEARCH_FOLDERS = [
    ("result files without run.json", lambda folder: folder.mkdir() or (folder / "pareto.png").write_text("mine"),
     "holds pareto.png but no run.json"),
    ("run.json holding a list", _damage("run.json", "[]"), "run.json is damaged (it holds a list"),
    ("run.json not JSON", _damage("run.json", "{"), "run.json is damaged (not valid JSON"),
    ("sampled arch outside the space", _damage("sampled_archs.json", '[{"resolution": 1000}]'), "does not fit the supernet's space"),
    ("candidate with a text accuracy", _damage("candidates.jsonl", '{"index": 0, "arch": {}, "macs": 1, "params": 1, "accuracy": "high"}\n'),
     "accuracy is 'high'"),
    ("candidate that is a list", _damage("candidates.jsonl", "[1]\n[2]\n"), "an entry is a list"),
]  # fmt: skip


@pytest.mark.parametrize("case, make, phrase", SEARCH_FOLDERS, ids=[row[0] for row in SEARCH_FOLDERS])
def test_a_damaged_or_foreign_results_folder_is_refused(tmp_path, case, make, phrase):
    folder = tmp_path / "results"
    make(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises((ValueError, OSError)) as error:
        _search_run(folder).run()
    assert phrase in str(error.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
