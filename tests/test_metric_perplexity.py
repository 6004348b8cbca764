"""The vendored perplexity metric: token-weighted exp(total NLL / total tokens), loaded offline by path."""

import math

import evaluate
import pytest
import torch

from rnn_lm_hf.metrics import available_metrics, metric_path


@pytest.fixture(scope="module")
def perplexity():
    return evaluate.load(metric_path("perplexity"))


def test_token_weighted_not_mean_of_chunk_perplexities(perplexity):
    # Chunk 1: 5 tokens, NLL 10 (2 nats/token); chunk 2: 1 token, NLL 1 (1 nat/token).
    result = perplexity.compute(predictions=[10.0, 1.0], references=[5, 1])
    assert result["num_tokens"] == 6
    assert result["loss"] == pytest.approx(11 / 6)
    assert result["perplexity"] == pytest.approx(math.exp(11 / 6))
    mean_of_chunk_perplexities = (math.exp(2.0) + math.exp(1.0)) / 2
    exp_of_mean_chunk_loss = math.exp((2.0 + 1.0) / 2)
    assert abs(result["perplexity"] - mean_of_chunk_perplexities) > 0.5
    assert abs(result["perplexity"] - exp_of_mean_chunk_loss) > 0.5


def test_matches_cross_entropy_over_all_tokens(perplexity):
    torch.manual_seed(0)
    logits, targets = torch.randn(23, 11), torch.randint(0, 11, (23,))
    for start, end in [(0, 4), (4, 17), (17, 23)]:  # uneven chunks, added one by one
        nll = torch.nn.functional.cross_entropy(logits[start:end], targets[start:end], reduction="sum")
        perplexity.add(predictions=nll.item(), references=end - start)
    result = perplexity.compute()
    expected_loss = torch.nn.functional.cross_entropy(logits, targets).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(expected_loss), rel=1e-6)
    assert result["num_tokens"] == 23


def test_no_tokens_is_an_error(perplexity):
    with pytest.raises(ValueError, match="No predicted tokens"):
        perplexity.compute(predictions=[0.0], references=[0])


def test_metric_path():
    assert "perplexity" in available_metrics()
    assert metric_path("perplexity").endswith("rnn_lm_hf/metrics/perplexity")
    with pytest.raises(FileNotFoundError, match="available"):
        metric_path("bleu")
