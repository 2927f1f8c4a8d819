"""The family end to end: train -> search -> export -> pipeline on an ImageNet-shaped image folder with a held-out
split; B-models' Table 12 record; exporting any arch, with or without BN recalibration; the family index and its
push to the Hub (a fake API that records the calls)."""

from __future__ import annotations

import json

import pytest
import yaml

from nasvit_hf.config_system import ConfigError
from tests.fake_hub import FakeHfApi
from tests.search_fixtures import load_recipe
from tests.test_holdout import write_image_folder

CHAIN_SEARCH_CONFIG = {
    "seed": 0,
    "num_threads": 1,
    "data": {"dataset": "imagefolder", "evaluation_split": "search", "batch_size": 8},
    "calibration": {"num_batches": 2},
    "predictor": {"num_subnets": 6, "n_estimators": 10},
    "evolution": {"population_size": 64, "parents": 8, "mutations": 8, "crossovers": 8, "generations": 3},
    "latency": {"warmup": 1, "repeats": 2, "num_archs": 26, "holdout_fraction": 0.15, "b_vs_a_rounds": 1,
                "b_vs_a_candidates": 2},
    "budgets": [
        {"name": "a0", "macs_fraction": 0.05},
        {"name": "a1", "macs_fraction": 0.3},
        {"name": "b0", "latency_of": "a0"},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """An ImageNet-shaped folder (train/<class>/*.png, 3 classes) -> a tiny supernet trained a few steps with 3
    images per class held out -> search (which finds the held-out split by itself) -> export of a0, a1, b0."""
    root = tmp_path_factory.mktemp("chain")
    write_image_folder(root / "imagenet", per_class=9, size=24)
    run = root / "run"
    load_recipe("train").main(
        [
            "--dataset", "imagefolder", "--data_dir", str(root / "imagenet"), "--validation_split", "null",
            "--holdout_per_class", "3", "--max_steps", "3", "--per_device_train_batch_size", "6",
            "--image_size", "32", "--output_dir", str(run), "--report_to", "none", "--checkpointing_steps", "null",
            "--progress_bar", "false", "--num_threads", "1",
        ]
    )  # fmt: skip
    config = root / "search_chain.yaml"
    config.write_text(yaml.safe_dump(CHAIN_SEARCH_CONFIG))
    exports = root / "exports"
    load_recipe("extract").main(
        ["--supernet", str(run / "final"), "--names", "a0", "a1", "b0", "--config", str(config),
         "--output_dir", str(exports), "--license", "apache-2.0"]
    )  # fmt: skip
    return {"root": root, "run": run, "config": config, "exports": exports}


def test_training_records_the_held_out_split_beside_the_supernet(chain):
    holdout = json.loads((chain["run"] / "final" / "holdout.json").read_text())
    assert holdout["per_class"] == 3 and len(holdout["indices"]) == 9
    assert holdout["source"]["dataset"] == "imagefolder" and holdout["source"]["num_rows"] == 27
    assert all(file_id.startswith("train/") for file_id in holdout["file_ids"])
    assert (chain["run"] / "holdout.json").read_text() == (chain["run"] / "final" / "holdout.json").read_text()


def test_search_ranked_on_the_held_out_images_only(chain):
    named = json.loads((chain["exports"] / "search" / "named.json").read_text())
    assert "9 images held out of 'train' (3 per class" in named["a0"]["evaluation"]
    assert "calibration: 16 images" in named["a0"]["evaluation"]  # 2 batches of 8 from the 18 others
    search_config = yaml.safe_load((chain["exports"] / "search" / "search_config.yaml").read_text())
    assert search_config["data"]["holdout"].endswith("holdout.json")


def test_family_grows_in_macs_and_b_model_records_its_a_model(chain):
    named = json.loads((chain["exports"] / "search" / "named.json").read_text())
    assert named["a1"]["macs"] > named["a0"]["macs"]
    record = named["b0"]["b_vs_a"]
    assert record["a_model"] == "a0" and record["b_latency_ms"] <= record["a_latency_ms"]
    assert record["a_accuracy"] == named["a0"]["accuracy"] and record["b_accuracy"] == named["b0"]["accuracy"]
    card = (chain["exports"] / "nasvit-b0" / "README.md").read_text()
    assert "## Compared with NASViT-A0 (the paper's Table 12)" in card
    assert f"| NASViT-A0 | {record['a_macs'] / 1e6:.2f} | {record['a_latency_ms']:.2f} |" in card


def test_exported_model_classifies_through_the_pipeline(chain):
    from PIL import Image
    from transformers import pipeline

    image = next((chain["root"] / "imagenet" / "train" / "dog").glob("*.png"))
    predictions = pipeline("image-classification", model=str(chain["exports"] / "nasvit-a1"))(Image.open(image))
    assert {p["label"] for p in predictions} == {"cat", "dog", "fox"}


def test_family_index_links_every_member(chain):
    index = chain["exports"] / "nasvit-family"
    card = (index / "README.md").read_text()
    for name in ("A0", "A1", "B0"):
        assert f"| {name} |" in card
    assert "`nasvit-a1/`" in card and "## B-models against their A-models" in card
    family = json.loads((index / "family.json").read_text())
    assert sorted(family["members"]) == ["a0", "a1", "b0"]


def test_search_refuses_the_training_split_of_an_image_folder(chain, tmp_path):
    with pytest.raises(ValueError, match="trained on split 'train'"):
        load_recipe("search").main(
            ["--supernet", str(chain["run"] / "final"), "--config", str(chain["config"]), "--output_dir",
             str(tmp_path / "s"), "--data.evaluation_split", "train", "--data.data_dir", str(chain["root"] / "imagenet")]
        )  # fmt: skip


def test_any_arch_exports_and_skipping_recalibration_is_recorded(chain, tmp_path):
    from nasvit_hf.search import load_supernet

    supernet = load_supernet(chain["run"] / "final")
    arch = supernet.config.largest_arch()
    arch["resolution"] = 48
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    load_recipe("extract").main(
        ["--supernet", str(chain["run"] / "final"), "--arch_file", str(tmp_path / "arch.json"), "--name", "mine",
         "--config", str(chain["config"]), "--output_dir", str(tmp_path / "out"), "--no_recalibration"]
    )  # fmt: skip
    folder = tmp_path / "out" / "nasvit-mine"
    assert json.loads((folder / "config.json").read_text())["arch"] == arch
    card = (folder / "README.md").read_text()
    assert "**Not recalibrated.**" in card and "arch given in" in card
    metadata = json.loads((folder / "nasvit_subnet.json").read_text())
    assert metadata["calibration"] is None
    bad = dict(arch, resolution=50)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="does not fit this supernet's search space.*resolution"):
        load_recipe("extract").main(
            ["--supernet", str(chain["run"] / "final"), "--arch_file", str(tmp_path / "bad.json"), "--name", "x",
             "--config", str(chain["config"]), "--output_dir", str(tmp_path / "out")]
        )  # fmt: skip


def test_push_to_hub_pushes_every_member_then_the_index(chain, tmp_path):
    from nasvit_hf.hub import push_family

    exported = json.loads((chain["exports"] / "subnets.json").read_text())
    api = FakeHfApi()
    urls = push_family(exported, chain["exports"] / "nasvit-family", "my-org", private=True, api=api)
    repos = [kwargs["repo_id"] for name, kwargs in api.calls if name == "create_repo"]
    assert repos == ["my-org/nasvit-a0", "my-org/nasvit-a1", "my-org/nasvit-b0", "my-org/nasvit-family"]
    uploads = [kwargs for name, kwargs in api.calls if name == "upload_folder"]
    assert uploads[-1]["folder_path"] == str(chain["exports"] / "nasvit-family")
    assert api.uploaded["my-org/nasvit-family"] == ["README.md", "family.json"]
    assert all(api.repos.values()) and len(api.repos) == 4  # every repo private, as asked
    assert len(urls) == 4
    index = (chain["exports"] / "nasvit-family" / "README.md").read_text()
    assert str(chain["root"]) not in index  # pushed: names, not local paths


def test_cli_failures_are_one_line(chain, tmp_path):
    import subprocess
    import sys

    from tests.search_fixtures import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "extract.py"), "--supernet", str(chain["run"] / "final"),
         "--names", "table13-a1", "--output_dir", str(tmp_path), "--device", "cuda:7"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_the_old_command_name_forwards_to_extract_with_a_one_line_warning(chain, tmp_path):
    import subprocess
    import sys

    from tests.search_fixtures import ROOT

    def run(script, *args):
        command = [sys.executable, str(ROOT / "recipes" / script), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)

    warning = "FutureWarning: recipes/export.py is now recipes/extract.py; the old name will be removed"
    old, new = run("export.py", "--help"), run("extract.py", "--help")
    assert old.returncode == new.returncode == 0 and old.stdout == new.stdout and "--names" in old.stdout
    assert old.stderr.strip() == warning
    failing = ["--supernet", str(chain["run"] / "final"), "--names", "table13-a1", "--output_dir", str(tmp_path),
               "--device", "cuda:7"]  # fmt: skip
    old, new = run("export.py", *failing), run("extract.py", *failing)
    assert old.returncode == new.returncode == 2
    assert old.stderr.splitlines()[0] == warning and warning not in new.stderr
    assert old.stderr.splitlines()[-1] == new.stderr.splitlines()[-1] and "cuda:7" in new.stderr.splitlines()[-1]
    with pytest.warns(FutureWarning, match="recipes/extract.py"):  # imported, as the tests used to
        with pytest.raises(ConfigError, match="cuda:7"):
            load_recipe("export").main(failing)


def _export(chain, output_dir, *extra):
    return load_recipe("extract").main(
        ["--supernet", str(chain["run"] / "final"), "--config", str(chain["config"]), "--output_dir", str(output_dir),
         "--no_recalibration", *extra]
    )  # fmt: skip


def test_a_second_export_adds_to_the_family_and_records_names_not_paths(chain, tmp_path):
    import shutil

    exports = tmp_path / "exports"
    shutil.copytree(chain["exports"], exports)
    arch_file = tmp_path / "deep" / "private" / "arch.json"
    arch_file.parent.mkdir(parents=True)
    arch_file.write_text((exports / "nasvit-a0" / "config.json").read_text())  # a config.json holds its arch
    arch_file.write_text(json.dumps(json.loads(arch_file.read_text())["arch"]))
    _export(chain, exports, "--arch_file", str(arch_file), "--name", "mine")
    family = json.loads((exports / "nasvit-family" / "family.json").read_text())
    assert sorted(family["members"]) == ["a0", "a1", "b0", "mine"]  # the first export's members stay
    assert sorted(e["name"] for e in json.loads((exports / "subnets.json").read_text())) == ["a0", "a1", "b0", "mine"]
    card = (exports / "nasvit-family" / "README.md").read_text()
    assert "| MINE |" in card and "| A0 |" in card and "arch given in arch.json" in card
    from nasvit_hf.hub.push import find_local_paths

    assert find_local_paths(exports / "nasvit-family") == [] and str(tmp_path) not in card
    assert family["members"]["mine"]["recalibrated"] is False and family["members"]["a0"]["recalibrated"] is True


@pytest.mark.parametrize(
    ("setup", "phrase"),
    [
        ("reserved", "is reserved"),
        ("foreign_index", "is not a family index of this tool"),
        ("damaged_index", "is not a family index"),
        ("foreign_summary", "is not a summary of the subnets this tool saved"),
        ("foreign_legacy_summary", "exports.json is not a summary of the subnets this tool saved"),
        ("other_supernet", "indexes the subnets of another supernet"),
    ],
)
def test_the_family_index_is_never_overwritten_or_mixed(chain, tmp_path, setup, phrase):
    exports = tmp_path / "exports"
    index = exports / "nasvit-family"
    index.mkdir(parents=True)
    name = "family" if setup == "reserved" else "mine"
    if setup == "foreign_index":
        (index / "README.md").write_text("my own notes")
    elif setup == "damaged_index":
        (index / "family.json").write_text('{"members": {"a0": {"macs": "many"}}}')
    elif setup == "foreign_summary":
        (index / "family.json").write_text('{"members": {}}')
        (exports / "subnets.json").write_text('{"mine": 1}')
    elif setup == "foreign_legacy_summary":
        (index / "family.json").write_text('{"members": {}}')
        (exports / "exports.json").write_text('{"mine": 1}')
    elif setup == "other_supernet":
        (index / "family.json").write_text('{"supernet": "other", "supernet_fingerprint": "0123", "members": {}}')
    before = {p: p.read_bytes() for p in exports.rglob("*") if p.is_file()}
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(json.loads((chain["exports"] / "nasvit-a0" / "config.json").read_text())["arch"]))
    with pytest.raises((ValueError, OSError), match=phrase):  # the recipe's user errors: one line, exit 2
        _export(chain, exports, "--arch_file", str(arch), "--name", name)
    assert {p: p.read_bytes() for p in exports.rglob("*") if p.is_file()} == before
    assert not (exports / f"nasvit-{name}" / "config.json").exists()


@pytest.mark.parametrize("prefix", ["../", "a/b-", "/abs-", ".hidden-", 3])
def test_a_prefix_that_is_not_a_folder_name_prefix_is_refused_by_the_library(tmp_path, prefix):
    from nasvit_hf.hub.family import check_family_target, family_folder, write_family_index

    member = {"name": "a0", "macs": 1, "params": 1, "latency_ms": 1.0, "accuracy": 1.0, "provenance": "p"}
    for call in (
        lambda: family_folder(tmp_path, prefix),
        lambda: check_family_target(tmp_path, prefix),
        lambda: write_family_index([member], tmp_path, supernet="s", prefix=prefix),
    ):
        with pytest.raises(ValueError, match=r"--prefix .* must be a folder-name prefix \(letters"):
            call()
    assert list(tmp_path.iterdir()) == []
    assert (
        family_folder(tmp_path, "") == tmp_path / "family" and family_folder(tmp_path, "my.v2_").name == "my.v2_family"
    )
