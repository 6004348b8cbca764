"""The built-in agreement corpus: deterministic, agreeing by construction, and the agreement evaluation itself."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rnn_lm_hf.data import load_text_datasets
from rnn_lm_hf.demo_corpus import (
    PLURAL_NOUNS,
    PLURAL_VERBS,
    SINGULAR_NOUNS,
    SINGULAR_VERBS,
    agreement_accuracy,
    agreement_pairs,
    demo_vocabulary,
    generate_corpus,
    generate_sentences,
    write_demo_corpus,
)
from rnn_lm_hf.tokenization import train_tokenizer, word_tokenizer_from_vocab


def test_corpus_is_deterministic_and_small():
    assert generate_corpus(200, seed=3) == generate_corpus(200, seed=3)
    assert generate_corpus(200, seed=3) != generate_corpus(200, seed=4)
    sentences = generate_corpus(3000, seed=0)
    words = {w for s in sentences for w in s.split()}
    assert words <= set(demo_vocabulary()) and len(demo_vocabulary()) < 300
    assert all(s == s.lower() and s.endswith(" .") and "  " not in s for s in sentences)


def test_subject_and_verb_agree_by_construction():
    sentences = generate_sentences(3000, seed=1)
    has_attractor = 0
    for sentence in sentences:
        words = sentence.text.split()
        subject, verb = words[sentence.subject_index], words[sentence.verb_index]
        assert subject in (PLURAL_NOUNS if sentence.plural else SINGULAR_NOUNS), sentence
        assert verb in (PLURAL_VERBS if sentence.plural else SINGULAR_VERBS), sentence
        between = words[sentence.subject_index + 1 : sentence.verb_index]
        has_attractor += any(w in (SINGULAR_NOUNS if sentence.plural else PLURAL_NOUNS) for w in between)
    assert 0.3 < sum(s.plural for s in sentences) / len(sentences) < 0.7
    assert has_attractor > 0.1 * len(sentences)  # enough mismatching attractors to make agreement non-trivial


def test_agreement_pairs_are_correct():
    pairs = agreement_pairs(500, seed=2)
    assert pairs == agreement_pairs(500, seed=2)
    for prefix, correct, wrong in pairs:
        words = prefix.split()
        head = next(w for w in words if w in SINGULAR_NOUNS | PLURAL_NOUNS)
        plural = head in PLURAL_NOUNS
        assert correct in (PLURAL_VERBS if plural else SINGULAR_VERBS)
        assert wrong in (SINGULAR_VERBS if plural else PLURAL_VERBS) and wrong != correct
        # At least one attractor of the opposite number after the head.
        assert any(w in (SINGULAR_NOUNS if plural else PLURAL_NOUNS) for w in words[words.index(head) + 1 :])


def test_write_demo_corpus(tmp_path):
    paths = write_demo_corpus(tmp_path / "demo", num_train=300, num_validation=30, num_test=20, seed=5)
    assert set(paths) == {"train", "validation", "test"}
    lines = {split: Path(path).read_text(encoding="utf-8").splitlines() for split, path in paths.items()}
    assert [len(lines[s]) for s in ("train", "validation", "test")] == [300, 30, 20]
    assert lines["train"] + lines["validation"] + lines["test"] == generate_corpus(350, seed=5)
    raw = load_text_datasets(paths["train"], paths["validation"], paths["test"], cache_dir=str(tmp_path / "cache"))
    assert len(raw["train"]) == 300


class _NumberTrackingLM(torch.nn.Module):
    """A stand-in causal LM that favours the verb forms matching the number of the FIRST noun of the row (the head:
    always right) or of the MOST RECENT noun (fooled by every attractor)."""

    def __init__(self, tokenizer, follow: str):
        super().__init__()
        self.follow = follow
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(tokenizer)
        self.noun_number = torch.zeros(self.vocab_size)  # +1 singular noun, -1 plural noun
        self.verb_number = torch.zeros(self.vocab_size)  # +1 singular verb, -1 plural verb
        for words, table, sign in [
            (SINGULAR_NOUNS, self.noun_number, 1.0),
            (PLURAL_NOUNS, self.noun_number, -1.0),
            (SINGULAR_VERBS, self.verb_number, 1.0),
            (PLURAL_VERBS, self.verb_number, -1.0),
        ]:
            table[[vocab[w] for w in words]] = sign
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        numbers = self.noun_number[input_ids] * attention_mask  # (batch, seq_len)
        state = torch.zeros(input_ids.shape[0])
        tracked = []
        for t in range(input_ids.shape[1]):
            noun = numbers[:, t]
            update = (noun != 0) & ((state == 0) if self.follow == "head" else torch.ones_like(noun, dtype=torch.bool))
            state = torch.where(update, noun, state)
            tracked.append(state)
        tracked = torch.stack(tracked, dim=1)  # (batch, seq_len)
        logits = 3.0 * tracked[..., None] * self.verb_number  # (batch, seq_len, vocab_size)
        return SimpleNamespace(logits=logits + self.dummy)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_agreement_accuracy_with_oracles(batch_size):
    tokenizer = word_tokenizer_from_vocab(demo_vocabulary())
    pairs = agreement_pairs(40, seed=0)  # prefixes of different lengths: left padding inside a batch
    head_model = _NumberTrackingLM(tokenizer, follow="head").train()
    assert agreement_accuracy(head_model, tokenizer, pairs, batch_size=batch_size) == 1.0
    assert head_model.training  # mode restored
    recent_model = _NumberTrackingLM(tokenizer, follow="recent")
    assert agreement_accuracy(recent_model, tokenizer, pairs, batch_size=batch_size) == 0.0


def test_agreement_accuracy_reads_a_context_first():
    tokenizer = word_tokenizer_from_vocab(demo_vocabulary())
    pairs = agreement_pairs(40, seed=0)
    # The "head" oracle keeps the first noun of the row: after this context, "dog", so it always picks singular.
    accuracy = agreement_accuracy(
        _NumberTrackingLM(tokenizer, follow="head"), tokenizer, pairs, context="the dog sleeps ."
    )
    assert accuracy == sum(correct in SINGULAR_VERBS for _, correct, _ in pairs) / len(pairs)
    assert 0 < accuracy < 1


class _UniformLM(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab_size) + self.dummy)


def test_agreement_accuracy_sums_multi_token_verbs():
    # Char level: " is" is 3 tokens and " are" 4; under a uniform model the shorter continuation is more likely.
    tokenizer = train_tokenizer(generate_corpus(500, seed=0), kind="char")
    pairs = [("the writer", "is", "are"), ("the writers", "are", "is"), ("the dogs", "have", "has")]
    assert agreement_accuracy(_UniformLM(len(tokenizer)), tokenizer, pairs) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        agreement_accuracy(_UniformLM(len(tokenizer)), tokenizer, [])


def test_demo_prints_its_agreement_accuracy(tmp_path, capsys):
    """The README says the demo reports the agreement accuracy: it is in the `[result]` line, as in all_results."""
    import json

    from rnn_lm_hf.cli import main

    argv = ["--output_dir", str(tmp_path), "--demo_sentences", "300", "--max_steps", "2", "--num_samples", "0"]
    assert main(["demo", *argv, "--disable_tqdm", "True", "--save_strategy", "no"]) == 0
    result = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("[result] "))
    accuracy = json.loads((tmp_path / "all_results.json").read_text())["agreement_accuracy"]
    assert f"subject-verb agreement accuracy {accuracy:.3f}" in result
