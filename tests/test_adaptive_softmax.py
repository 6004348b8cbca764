"""The adaptive softmax (`softmax_cutoffs`): a training step scores each position's target cluster only, and is the
same loss and gradient as the cross-entropy of the log-probabilities the model returns everywhere else."""

import json

import pytest
import torch

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM
from rnn_lm_hf.training import train_clm
from tests.conftest import make_config
from tests.test_train_clm import corpus, tiny_run_args  # noqa: F401 (the corpus fixture)


CUTOFFS = [20, 50]  # of vocab 99: a head of 20 tokens and two clusters


def adaptive_model(**overrides) -> RNNLMForCausalLM:
    torch.manual_seed(0)
    return RNNLMForCausalLM(make_config(softmax_cutoffs=CUTOFFS, **overrides))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 99, (3, 12), generator=generator)
    labels = input_ids.clone()
    labels[0, :4] = labels[2, -2:] = -100
    return input_ids, labels


def test_logits_are_the_log_probabilities_of_the_whole_vocabulary():
    model = adaptive_model().eval()
    input_ids, _ = batch()
    log_probs = model(input_ids).logits
    assert log_probs.shape == (3, 12, 99) and log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 12))
    # p(token) = p_head(its cluster) * p_cluster(token): a token of the second cluster, by hand
    features = model.model(input_ids).last_hidden_state[0, 0]
    scores, clusters = model.lm_head(features), model.cluster_head(features)
    head = torch.cat([scores[:20], clusters]).log_softmax(-1)
    want = head[21] + scores[50:].log_softmax(-1)[70 - 50]
    torch.testing.assert_close(log_probs[0, 0, 70], want)


@pytest.mark.parametrize("labels_kind", ["labels", "shift_labels"])
@pytest.mark.parametrize("num_items_in_batch", [None, 23])
def test_training_step_equals_the_cross_entropy_of_the_log_probabilities(labels_kind, num_items_in_batch):
    """Without dropout, train mode (the split loss, no logits) and eval mode (the whole vocabulary's log-probabilities
    through the head's usual loss) give the same loss and the same gradient for every weight."""
    model = adaptive_model(dropout_output=0.0)
    input_ids, labels = batch()
    labels = {labels_kind: labels}

    def loss_and_grads(training: bool):
        model.train(training)
        model.zero_grad()
        out = model(input_ids, **labels, num_items_in_batch=num_items_in_batch)
        out.loss.backward()
        return out, {name: param.grad.clone() for name, param in model.named_parameters()}

    split, split_grads = loss_and_grads(True)
    full, full_grads = loss_and_grads(False)
    assert split.logits is None and full.logits is not None
    torch.testing.assert_close(split.loss, full.loss)
    for name, grad in full_grads.items():
        torch.testing.assert_close(split_grads[name], grad, msg=name)
    assert split_grads["cluster_head.weight"].abs().sum() > 0


def test_bidirectional_lm_trains_both_directions_through_the_clusters():
    model = adaptive_model(bidirectional=True, separate_directions=True)
    input_ids, labels = batch()
    train = model.train()(input_ids, labels=labels)
    evaluation = model.eval()(input_ids, labels=labels)
    assert train.logits is None and train.logits_backward is None
    for field in ("loss", "loss_forward", "loss_backward"):
        torch.testing.assert_close(getattr(train, field), getattr(evaluation, field))


def test_saved_model_loads_and_generates_from_its_log_probabilities(tmp_path):
    model = adaptive_model().eval()
    model.save_pretrained(tmp_path)
    loaded = RNNLMForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.softmax_cutoffs == CUTOFFS
    input_ids, _ = batch()
    torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits)
    greedy = loaded.generate(input_ids[:1, :3], max_new_tokens=4, do_sample=False, eos_token_id=None)
    want = model(input_ids[:1, :3]).logits[0, -1].argmax()
    assert greedy.shape == (1, 7) and greedy[0, 3] == want


@pytest.mark.parametrize(
    "cutoffs",
    [[0, 50], [50, 20], [20, 99], [20, 200], ["20"], []],
)
def test_impossible_cutoffs_are_refused_naming_the_fix(cutoffs):
    with pytest.raises(ValueError, match=r"`softmax_cutoffs` must be increasing token ids in \(0, vocab_size=99\)"):
        make_config(softmax_cutoffs=cutoffs)


def test_cutoffs_from_config_overrides():
    config = RNNLMConfig(vocab_size=99)
    config.update_from_string("softmax_cutoffs=20/50")
    assert config.softmax_cutoffs == [20, 50]
    config.update_from_string("softmax_cutoffs=30")
    assert config.softmax_cutoffs == [30]


def test_train_clm_with_an_adaptive_softmax_reports_what_rnn_lm_evaluate_gives(tmp_path, corpus, capsys):  # noqa: F811
    """The training script with `softmax_cutoffs` (bf16 on a CPU that has it, the defaults'): it learns, and the
    perplexity it reports is the one `rnn-lm evaluate` computes from the saved model's log-probabilities."""
    from rnn_lm_hf.cli import main as cli_main

    args = tiny_run_args(corpus, tmp_path, "--max_steps", "30", "--num_samples", "0")
    args[args.index("--config_overrides") + 1] += ",softmax_cutoffs=10/40"
    metrics = train_clm.main(args)
    assert json.loads((tmp_path / "config.json").read_text())["softmax_cutoffs"] == [10, 40]
    capsys.readouterr()
    assert cli_main(["evaluate", str(tmp_path), "--file", str(corpus / "valid.txt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perplexity"] == pytest.approx(metrics["eval_perplexity"], rel=1e-6, abs=0)
    vocab = RNNLMConfig.from_pretrained(tmp_path).vocab_size
    assert metrics["eval_perplexity"] < vocab / 2  # learnt something: far below a uniform guess
