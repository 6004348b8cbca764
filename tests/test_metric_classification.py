"""The vendored classification and accuracy metrics: hand-computed values, -100 skipping, and scikit-learn parity."""

from pathlib import Path

import evaluate
import numpy as np
import pytest


METRICS = Path(__file__).resolve().parents[1] / "rnn_lm_hf" / "metrics"


@pytest.fixture(scope="module")
def classification():
    return evaluate.load(str(METRICS / "classification"), keep_in_memory=True)


@pytest.fixture(scope="module")
def accuracy():
    return evaluate.load(str(METRICS / "accuracy"), keep_in_memory=True)


def test_classification_hand_computed(classification):
    out = classification.compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 2])
    # class 0: P 1, R 1/2, F1 2/3; class 1: P 1/2, R 1, F1 2/3; class 2: P = R = F1 = 1
    assert out["accuracy"] == pytest.approx(3 / 4)
    assert out["macro_precision"] == pytest.approx(5 / 6)
    assert out["macro_recall"] == pytest.approx(5 / 6)
    assert out["macro_f1"] == pytest.approx(7 / 9)
    assert out["micro_f1"] == pytest.approx(3 / 4)
    assert out["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)
    assert out["f1_class_0"] == pytest.approx(2 / 3) and out["f1_class_2"] == 1.0


def test_classification_labels_argument_counts_absent_classes(classification):
    out = classification.compute(predictions=[0, 0], references=[0, 0], labels=[0, 1])
    assert out["macro_f1"] == 0.5  # class 1 never occurs: F1 0, as scikit-learn with zero_division=0
    assert classification.compute(predictions=[0, 0], references=[0, 0])["macro_f1"] == 1.0


def test_classification_skips_ignore_index(classification):
    out = classification.compute(predictions=[1, 0, 1], references=[1, -100, 1])
    assert out["accuracy"] == 1.0
    with pytest.raises(ValueError, match="no examples"):
        classification.compute(predictions=[1], references=[-100])


def test_classification_matches_sklearn(classification):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 4, 200), rng.integers(0, 5, 200)
    out = classification.compute(predictions=predictions, references=references)
    assert out["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(references, predictions))
    for average in ("macro", "micro", "weighted"):
        expected = sklearn_metrics.f1_score(references, predictions, average=average, zero_division=0)
        assert out[f"{average}_f1"] == pytest.approx(expected)
    precision, recall, _, _ = sklearn_metrics.precision_recall_fscore_support(
        references, predictions, average="macro", zero_division=0
    )
    assert (out["macro_precision"], out["macro_recall"]) == (pytest.approx(precision), pytest.approx(recall))


def test_accuracy_ignores_minus_100(accuracy):
    assert accuracy.compute(predictions=[1, 2, 0], references=[1, -100, 1]) == {"accuracy": 0.5, "num_counted": 2}
    # (batch, seq_len) arrays as Trainer hands them over, padded with -100
    out = accuracy.compute(
        predictions=np.array([[1, 2, 0], [3, 3, 3]]), references=np.array([[1, -100, 1], [3, -100, -100]])
    )
    assert out == {"accuracy": pytest.approx(2 / 3), "num_counted": 3}
    assert accuracy.compute(predictions=[[1, 2], [0]], references=[[1, 2], [1]])["accuracy"] == pytest.approx(2 / 3)


def test_accuracy_ignore_index_options(accuracy):
    assert accuracy.compute(predictions=[1, 5], references=[1, -100], ignore_index=None)["accuracy"] == 0.5
    assert accuracy.compute(predictions=[1, 5], references=[1, 0], ignore_index=0)["num_counted"] == 1
    assert np.isnan(accuracy.compute(predictions=[1], references=[-100])["accuracy"])  # nothing to count
