import evaluate
import numpy as np
import pytest

from nasvit_hf.metrics import accuracy_metric_path, load_accuracy_metric


def test_accuracy_module_loads_from_its_local_path():
    metric = evaluate.load(accuracy_metric_path())
    assert metric.compute(predictions=[0, 1, 1], references=[0, 1, 0]) == {"accuracy": pytest.approx(2 / 3)}


def test_top_k_from_logits():
    logits = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    result = load_accuracy_metric().compute(predictions=logits, references=[2, 0, 0], top_k=[1, 2, 3])
    assert result == {"accuracy": pytest.approx(1 / 3), "top2_accuracy": pytest.approx(2 / 3), "top3_accuracy": 1.0}


def test_accumulates_batches_and_counts_without_normalising():
    metric = load_accuracy_metric()
    metric.add_batch(predictions=[[1.0, 0.0], [0.0, 1.0]], references=[0, 0])
    metric.add_batch(predictions=[[0.0, 1.0]], references=[1])
    assert metric.compute(top_k=1, normalize=False) == {"accuracy": 2.0}


def test_rejects_references_outside_the_logit_classes():
    with pytest.raises(ValueError, match="class indices"):
        load_accuracy_metric().compute(predictions=[[0.1, 0.9]], references=[3])
