"""Teacher ensembles: loading timm-format folders through AutoModelForImageClassification, each teacher's input form,
the tempered mean of softmaxes, and label-set checks."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageClassification

from nasvit_hf.training.teachers import (
    TeacherEnsemble,
    TeacherInput,
    align_teacher_labels,
    load_teacher_ensemble,
    parse_teacher_names,
)
from tests._timm_teachers import write_timm_teacher

LABELS = ["n01440764", "n01443537", "n01484850", "n01491361"]
STUDENT_MEAN, STUDENT_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def teacher_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    first = write_timm_teacher(root / "a", LABELS, seed=0, input_size=48)
    second = write_timm_teacher(root / "b", LABELS, seed=1, input_size=40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return str(first), str(second)


def test_parse_teacher_names_accepts_a_string_a_comma_list_and_a_list():
    assert parse_teacher_names(None) == []
    assert parse_teacher_names("timm/a") == ["timm/a"]
    assert parse_teacher_names("timm/a, timm/b") == ["timm/a", "timm/b"]
    assert parse_teacher_names(["x", " y "]) == ["x", "y"]


def test_each_teacher_gets_its_own_size_and_normalisation(teacher_folders):
    ensemble = load_teacher_ensemble(teacher_folders, LABELS, STUDENT_MEAN, STUDENT_STD, temperature=0.2)
    assert ensemble.inputs[0].size == (48, 48) and ensemble.inputs[1].size == (40, 40)
    assert ensemble.inputs[1].mean == (0.5, 0.5, 0.5) and ensemble.inputs[0].interpolation == "bicubic"
    images = torch.rand(2, 3, 64, 64)
    student = (images - torch.tensor(STUDENT_MEAN).view(1, 3, 1, 1)) / torch.tensor(STUDENT_STD).view(1, 3, 1, 1)
    second = ensemble.teacher_pixel_values(student, 1)
    expected = (F.interpolate(images, size=(40, 40), mode="bicubic", align_corners=False, antialias=True) - 0.5) / 0.5
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=0)


def test_ensemble_is_the_mean_of_tempered_softmaxes(teacher_folders):
    ensemble = load_teacher_ensemble(teacher_folders, LABELS, STUDENT_MEAN, STUDENT_STD, temperature=0.2)
    student = torch.randn(3, 3, 56, 56)
    probabilities = ensemble(student)
    expected = 0
    for index, folder in enumerate(teacher_folders):
        teacher = AutoModelForImageClassification.from_pretrained(folder).eval()
        logits = teacher(pixel_values=ensemble.teacher_pixel_values(student, index)).logits
        expected = expected + (logits * 5.0).softmax(-1) / 2
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(3))
    assert not probabilities.requires_grad


def test_single_teacher_string_still_works(teacher_folders):
    ensemble = load_teacher_ensemble(teacher_folders[0], LABELS, STUDENT_MEAN, STUDENT_STD)
    assert len(ensemble.teachers) == 1 and ensemble(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_label_mismatch_is_named(teacher_folders):
    other = LABELS[:3] + ["n09999999"]
    with pytest.raises(ValueError, match=r"differ from the data.s.*n01491361.*n09999999"):
        load_teacher_ensemble(teacher_folders[0], other, STUDENT_MEAN, STUDENT_STD)
    with pytest.raises(ValueError, match="predicts 4 classes, the data has 3"):
        load_teacher_ensemble(teacher_folders[0], LABELS[:3], STUDENT_MEAN, STUDENT_STD)


def test_teacher_outputs_are_reordered_to_the_data_classes():
    index = align_teacher_labels(["b", "a", "c"], ["a", "b", "c"])
    assert index.tolist() == [1, 0, 2]
    assert align_teacher_labels(["a", "b"], ["A", "b"]) is None
    teacher = torch.nn.Linear(1, 3)
    teacher.forward = lambda pixel_values: type("Out", (), {"logits": torch.tensor([[1.0, 2.0, 3.0]])})()
    ensemble = TeacherEnsemble([teacher], [TeacherInput(size=(4, 4))], STUDENT_MEAN, STUDENT_STD, 1.0, [index])
    torch.testing.assert_close(ensemble(torch.zeros(1, 3, 4, 4)), torch.tensor([[2.0, 1.0, 3.0]]).softmax(-1))


def test_imagenet_synset_ids_and_descriptions_are_the_same_labels():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    synsets = [info.index_to_label_name(i) for i in range(1000)]
    descriptions = [info.index_to_description(i) for i in range(1000)]
    assert align_teacher_labels(synsets, descriptions) is None
