from pathlib import Path

import pytest

from nasvit_hf.training import TrainingConfig, parse_overrides
from nasvit_hf.training.data import load_image_classification_splits

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


@pytest.mark.parametrize("name", ["digits_tiny.yaml", "imagenet_reference.yaml"])
def test_shipped_configs_load(name):
    config = TrainingConfig.from_yaml(CONFIGS / name)
    assert config.gradient_priority == "sub"


def test_command_line_overrides_win_and_are_typed():
    overrides = parse_overrides(["--max_steps", "7", "--output_dir", "/tmp/x", "--ema_decay=null", "--seed", "3"])
    config = TrainingConfig.from_yaml(CONFIGS / "digits_tiny.yaml", overrides)
    assert (config.max_steps, config.output_dir, config.ema_decay, config.seed) == (7, "/tmp/x", None, 3)
    assert config.learning_rate == pytest.approx(2e-3)


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ValueError, match="did you mean 'max_steps'"):
        TrainingConfig.from_dict({"max_step": 3})


def test_wrong_type_and_bad_choice_are_rejected():
    with pytest.raises(ValueError, match="max_steps must be of type int"):
        TrainingConfig.from_dict({"max_steps": "ten"})
    with pytest.raises(ValueError, match="gradient_priority must be one of"):
        TrainingConfig.from_dict({"gradient_priority": "both"})


def test_override_without_value_is_an_error():
    with pytest.raises(ValueError, match="needs a value"):
        parse_overrides(["--max_steps"])


def test_unknown_dataset_column_says_which_columns_exist():
    with pytest.raises(ValueError, match=r"no column 'img'.*\['image', 'label'\]"):
        load_image_classification_splits("digits", image_column="img")
    with pytest.raises(ValueError, match="no split 'valid'"):
        load_image_classification_splits("digits", validation_split="valid")


def test_data_source_is_read_from_the_training_config_by_name():
    from nasvit_hf.training import ImageDataSource

    config = TrainingConfig(dataset="imagefolder", data_dir="images", max_train_samples=7, label_column="y")
    source = ImageDataSource.from_config(config, validation_split=None)
    assert source == ImageDataSource(
        "imagefolder", validation_split=None, label_column="y", data_dir="images", max_train_samples=7
    )
    train, validation, labels = load_image_classification_splits(ImageDataSource("digits", max_train_samples=5))
    assert len(train) == 5 and len(validation) > 5 and labels == [str(digit) for digit in range(10)]
    by_keywords = load_image_classification_splits(dataset="digits", max_train_samples=5)  # the old call form
    assert [len(split) for split in by_keywords[:2]] == [5, len(validation)] and by_keywords[2] == labels
