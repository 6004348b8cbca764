"""The vendored minimal-pairs metric: strict log-probability comparison, overall and by group, loaded by path."""

import evaluate
import pytest

from rnn_lm_hf.metrics import available_metrics, metric_path


@pytest.fixture(scope="module")
def minimal_pairs():
    return evaluate.load(metric_path("minimal_pairs"))


def test_accuracy_counts_strictly_higher_good_scores(minimal_pairs):
    good, bad = [-1.0, -3.0, -2.0, -0.5], [-2.0, -2.5, -2.0, -4.0]  # right, wrong, tie (wrong), right
    result = minimal_pairs.compute(predictions=good, references=bad)
    assert result == {"accuracy": 0.5, "num_pairs": 4}


def test_accuracy_by_group(minimal_pairs):
    result = minimal_pairs.compute(
        predictions=[-1.0, -3.0, -2.0, -0.5], references=[-2.0, -2.5, -2.0, -4.0], groups=[0, 1, 1, 0]
    )
    assert result["accuracy_by_group"] == {"0": 1.0, "1": 0.0}
    assert result["count_by_group"] == {"0": 2, "1": 2}
    with pytest.raises(ValueError, match="one per pair"):
        minimal_pairs.compute(predictions=[-1.0], references=[-2.0], groups=[0, 1])


def test_listed_with_the_shipped_metrics():
    assert "minimal_pairs" in available_metrics()
