"""The CRF output layer (`use_crf`): likelihood and Viterbi against brute force over every tag path, the tag-scheme
constraints, and the model, pipeline and training script built on it."""

import itertools
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForTokenClassification
from rnn_lm_hf.modeling_rnn_lm import RNNLMCRF, allowed_tag_moves
from rnn_lm_hf.tokenization import word_tokenizer_from_vocab
from rnn_lm_hf.training import train_token_classification as script


NER = Path(__file__).resolve().parent / "fixtures" / "ner"
SCHEMES = {
    None: ["A", "B", "C"],
    "IOB1": ["O", "I-X", "B-X"],
    "IOB2": ["O", "B-X", "I-X", "B-Y", "I-Y"],
    "BIOES": ["O", "B-X", "I-X", "E-X", "S-X"],
}
# Padding on either side, and positions without a label (-100: sub-words the likelihood sums over).
MASK = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
OBSERVED = torch.tensor([[1, 0, 1, 1, 1], [0, 0, 1, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)


def config_for(labels: list[str], scheme: str | None) -> RNNLMConfig:
    return RNNLMConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, id2label=dict(enumerate(labels)), use_crf=True,
        crf_scheme=scheme,
    )  # fmt: skip


def brute_force(crf: RNNLMCRF, emissions, labels, mask) -> tuple[torch.Tensor, tuple[int, ...]]:
    """log p(labels) summed over the tags of unlabelled positions, and the best path, by listing every tag path."""
    start, moves, end = crf.scores()
    real = [t for t in range(len(mask)) if mask[t]]
    scores = {}
    for path in itertools.product(range(emissions.shape[-1]), repeat=len(real)):
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, tag] for t, tag in zip(real, path))
        scores[path] = score + sum(moves[a, b] for a, b in zip(path, path[1:]))
    consistent = [s for path, s in scores.items() if all(labels[t] < 0 or labels[t] == y for t, y in zip(real, path))]
    log_z = torch.logsumexp(torch.stack(list(scores.values())), 0)
    return torch.logsumexp(torch.stack(consistent), 0) - log_z, max(scores, key=scores.get)


def valid_labels(crf: RNNLMCRF, emissions, mask) -> torch.Tensor:
    """Gold labels the scheme allows (the brute-force best path), with some positions left unlabelled."""
    paths = [brute_force(crf, emissions[b], torch.full((5,), -100), mask[b])[1] for b in range(len(mask))]
    labels = torch.full(mask.shape, -100)
    for b, path in enumerate(paths):
        labels[b, mask[b]] = torch.tensor(path)
    return labels.masked_fill(~OBSERVED, -100)


@pytest.mark.parametrize("scheme", SCHEMES, ids=str)
def test_likelihood_and_viterbi_equal_brute_force(scheme):
    torch.manual_seed(0)
    crf = RNNLMCRF(config_for(SCHEMES[scheme], scheme)).double()
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_()
    emissions = torch.randn(3, 5, len(SCHEMES[scheme]), dtype=torch.double)
    labels = valid_labels(crf, emissions, MASK)
    log_likelihood = crf.log_likelihood(emissions, labels, MASK)
    max_marginals = crf.max_marginals(emissions, MASK)
    for b in range(3):
        expected, best = brute_force(crf, emissions[b], labels[b], MASK[b])
        torch.testing.assert_close(log_likelihood[b], expected)
        assert tuple(max_marginals[b, MASK[b]].argmax(-1).tolist()) == best
    # A max-marginal is the score of a whole path: at every position its maximum is the best path's score.
    best_scores = max_marginals.masked_fill(~MASK.unsqueeze(-1), float("-inf")).amax((1, 2))
    torch.testing.assert_close(max_marginals.amax(-1)[MASK], best_scores.repeat_interleave(MASK.sum(1)))


def test_scheme_constraints():
    start, moves, end = allowed_tag_moves(SCHEMES["IOB2"], "IOB2")  # O B-X I-X B-Y I-Y
    assert start.tolist() == [True, True, False, True, False]
    assert moves[0, 2] == False and moves[1, 2] == True and moves[3, 2] == False and moves[2, 2] == True  # noqa: E712
    assert end.all()
    start, moves, end = allowed_tag_moves(SCHEMES["BIOES"], "BIOES")  # O B-X I-X E-X S-X
    assert start.tolist() == [True, True, False, False, True] and end.tolist() == [True, False, False, True, True]
    assert moves[1].tolist() == [False, False, True, True, False]  # B-X -> I-X or E-X only
    assert moves[3].tolist() == [True, True, False, False, True]  # after E-X: O, B or S
    with pytest.raises(ValueError, match="'NOUN' is no IOB2 tag.*crf_scheme"):
        RNNLMForTokenClassification(config_for(["NOUN", "VERB"], "IOB2"))
    with pytest.raises(ValueError, match="`crf_scheme` must be one of 'IOB1', 'IOB2', 'BIOES'"):
        config_for(["O"], "BILOU")


def test_forbidden_paths_get_no_probability():
    crf = RNNLMCRF(config_for(SCHEMES["IOB2"], "IOB2"))
    emissions = torch.zeros(1, 3, 5)
    emissions[0, 0, 2] = 50.0  # I-X wants the first token, which IOB2 forbids
    assert crf.max_marginals(emissions, torch.ones(1, 3, dtype=torch.bool))[0, 0].argmax() != 2
    labels = torch.tensor([[2, 0, 0]])  # O -> ... starting inside a chunk: impossible
    assert crf.log_likelihood(emissions, labels, torch.ones(1, 3, dtype=torch.bool)).item() < -1000


def tiny_tagger(labels=("PER", "LOC", "OTHER")) -> tuple[RNNLMForTokenClassification, object]:
    tokenizer = word_tokenizer_from_vocab(["mary", "paris", "works", "in", "john", "rome"])
    config = RNNLMConfig(
        vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, bidirectional=True, use_crf=True,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = RNNLMForTokenClassification(config).eval()
    with torch.no_grad():
        for param in model.crf.parameters():
            param.normal_(std=2.0)  # strong transitions, so Viterbi differs from the per-token argmax
    return model, tokenizer


def test_pipeline_returns_the_viterbi_tags():
    model, tokenizer = tiny_tagger()
    text = "mary works in paris john works in rome"
    encoded = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        emissions = model.classifier(model.model(**encoded).last_hidden_state)[0].double()
    mask = torch.ones(emissions.shape[0], dtype=torch.bool)
    _, viterbi = brute_force(model.crf.double(), emissions, torch.full(mask.shape, -100), mask)
    model.float()
    assert list(viterbi) != emissions.argmax(-1).tolist()  # the test would not tell them apart otherwise
    tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, ignore_labels=[])
    tags = [entity["entity"] for entity in tagger(text)]
    assert tags == [model.config.id2label[tag] for tag in viterbi]


def test_loss_is_the_mean_negative_log_likelihood_and_training_lowers_it():
    model, tokenizer = tiny_tagger()
    batch = tokenizer(["mary works in paris", "john works"], padding=True, return_tensors="pt")
    labels = torch.tensor([[0, 2, 2, 1], [0, 2, -100, -100]])
    output = model(**batch, labels=labels)
    with torch.no_grad():
        emissions = model.classifier(model.model(**batch).last_hidden_state)
    expected = -model.crf.log_likelihood(emissions, labels, batch["attention_mask"].bool()).mean()
    torch.testing.assert_close(output.loss, expected)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        loss = model(**batch, labels=labels).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 4


def test_saved_crf_loads_exactly(tmp_path):
    model, _ = tiny_tagger(labels=("O", "B-X", "I-X"))
    model.config.crf_scheme = "IOB2"
    model.save_pretrained(tmp_path)
    loaded = RNNLMForTokenClassification.from_pretrained(tmp_path)
    for name, param in model.crf.named_parameters():
        torch.testing.assert_close(getattr(loaded.crf, name), param)
    assert_scheme_penalties(loaded.crf, model.config)


def assert_scheme_penalties(crf: RNNLMCRF, config: RNNLMConfig) -> None:
    """The penalties are derived, never saved: from_pretrained (which builds on the meta device) must write them."""
    labels = [config.id2label[i] for i in range(config.num_labels)]
    allowed = allowed_tag_moves(labels, config.crf_scheme)
    for penalty, ok in zip((crf.start_penalty, crf.transition_penalty, crf.end_penalty), allowed):
        assert torch.equal(penalty, torch.where(ok, 0.0, -1e4))


def test_a_language_model_loads_into_a_crf_tagger_with_its_scheme(tmp_path):
    lm_config = RNNLMConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1)
    RNNLMForCausalLM(lm_config).save_pretrained(tmp_path)
    config = RNNLMConfig.from_pretrained(
        tmp_path, id2label=dict(enumerate(SCHEMES["IOB2"])), use_crf=True, crf_scheme="IOB2"
    )
    tagger = RNNLMForTokenClassification.from_pretrained(tmp_path, config=config)
    assert_scheme_penalties(tagger.crf, config)
    tagger.train()
    loss = tagger(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 0]])).loss
    assert loss.isfinite() and loss > 0  # zero only if the gold path were the only one


def test_training_script_with_a_crf(tmp_path):
    overrides = "hidden_size=16,embedding_size=12,num_hidden_layers=1,bidirectional=true,use_crf=true,crf_scheme=IOB2"
    args = [
        "--train_file", NER / "train.conll", "--validation_file", NER / "dev.conll", "--test_file", NER / "test.conll",
        "--config_overrides", overrides, "--output_dir", tmp_path, "--do_train", "--do_eval", "--do_predict",
        "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0",
        "--max_steps", "60", "--learning_rate", "0.05", "--logging_steps", "20",
    ]  # fmt: skip
    metrics = script.main([str(arg) for arg in args])
    assert metrics["test_f1"] > 0.5
    tagger = pipeline("token-classification", model=str(tmp_path))
    assert tagger.model.crf is not None and tagger.model.config.crf_scheme == "IOB2"
    assert "lample2016neural" in (tmp_path / "README.md").read_text()  # the model card cites the BiLSTM-CRF
