"""The vendored seqeval_f1 metric: hand-computed entity scores for conlleval, IOB1, IOB2 and BIOES, checked by seqeval."""

import random
from pathlib import Path

import evaluate
import pytest
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2, IOBES


METRIC_DIR = Path(__file__).resolve().parents[1] / "rnn_lm_hf" / "metrics" / "seqeval_f1"
# keep_in_memory: with the default on-disk cache, a compute() that raised leaves a file lock that costs the next 1 s.


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def test_conlleval_default_hand_computed(metric):
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O", "B-PER"]]
    # gold: PER[0:2] LOC[3] | ORG[0:3] PER[4]; predicted: PER[0:2] ORG[3] | ORG[0:2] PER[4]; both PERs match
    out = metric.compute(predictions=predictions, references=references)
    assert out["overall_precision"] == pytest.approx(2 / 4)
    assert out["overall_recall"] == pytest.approx(2 / 4)
    assert out["overall_f1"] == pytest.approx(0.5)
    assert out["overall_accuracy"] == pytest.approx(7 / 9)
    assert out["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 2}
    assert out["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert out["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}


def test_iob1_chunk_start_is_valid_but_not_in_strict_iob2(metric):
    references = [["B-PER", "I-PER", "O", "B-LOC"]]
    predictions = [["I-PER", "I-PER", "O", "I-LOC"]]  # IOB1 writing of the same two entities
    for scheme in (None, "IOB1"):
        assert metric.compute(predictions=predictions, references=references, scheme=scheme)["overall_f1"] == 1.0
    strict = metric.compute(predictions=predictions, references=references, scheme="IOB2")
    # strict IOB2: a chunk must open with B-, so nothing is predicted
    assert (strict["overall_precision"], strict["overall_recall"], strict["overall_f1"]) == (0.0, 0.0, 0.0)


def test_iob1_references_read_differently_by_iob2(metric):
    # IOB1 gold "I-PER I-PER B-PER": two PER entities, [0:2] and [2]; B- only separates adjacent same-type chunks.
    references = [["I-PER", "I-PER", "B-PER", "O"]]
    predictions = [["B-PER", "I-PER", "B-PER", "O"]]
    iob1 = metric.compute(predictions=predictions, references=references, scheme="IOB1")
    assert iob1["overall_f1"] == 1.0
    assert iob1["PER"]["number"] == 2
    # strict IOB2 drops the gold I-PER I-PER (no B-): gold {PER[2]}, predicted {PER[0:2], PER[2]}
    iob2 = metric.compute(predictions=predictions, references=references, scheme="IOB2")
    assert iob2["overall_precision"] == pytest.approx(1 / 2)
    assert iob2["overall_recall"] == pytest.approx(1.0)
    assert iob2["overall_f1"] == pytest.approx(2 / 3)
    assert iob2["PER"]["number"] == 1


def test_iob1_keeps_b_then_i_as_one_entity(metric):
    # seqeval's own strict IOB1 reads "B-PER I-PER" as a one-token PER[1]; ours keeps PER[0:2].
    out = metric.compute(predictions=[["B-PER", "O", "O"]], references=[["B-PER", "I-PER", "O"]], scheme="IOB1")
    assert out["overall_f1"] == 0.0
    out = metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]], scheme="IOB1")
    assert out["overall_f1"] == 1.0


def test_bioes_strict_and_default(metric):
    references = [["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "O"]]
    predictions = [["S-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]]  # LOC never closed with E-
    strict = metric.compute(predictions=predictions, references=references, scheme="BIOES")
    # strict: predicted {PER[0]}, gold {PER[0], LOC[2:5]}
    assert strict["overall_precision"] == 1.0
    assert strict["overall_recall"] == pytest.approx(1 / 2)
    assert strict["overall_f1"] == pytest.approx(2 / 3)
    assert strict["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert metric.compute(predictions=predictions, references=references, scheme="IOBES") == strict
    # conlleval closes the LOC chunk at the next O, so it matches
    assert metric.compute(predictions=predictions, references=references)["overall_f1"] == 1.0
    lenient = metric.compute(predictions=predictions, references=references, scheme="BIOES", mode="default")
    assert lenient["overall_f1"] == 1.0


def test_suffix_tags(metric):
    out = metric.compute(predictions=[["PER-B", "PER-I", "O"]], references=[["PER-B", "PER-I", "O"]], suffix=True)
    assert out["overall_f1"] == 1.0 and out["PER"]["number"] == 1


def test_batches_accumulate(metric):
    metric.add_batch(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])
    metric.add_batch(predictions=[["O", "O"]], references=[["B-LOC", "O"]])
    out = metric.compute()
    assert out["overall_precision"] == 1.0 and out["overall_recall"] == 0.5


def _random_tags(rng: random.Random, prefixes: str, n_sentences: int = 60) -> list[list[str]]:
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC")]
    return [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(n_sentences)]


@pytest.mark.parametrize(
    ("prefixes", "kwargs", "seqeval_kwargs"),
    [
        ("BI", {}, {}),
        ("BIES", {}, {}),
        ("BI", {"scheme": "IOB2"}, {"mode": "strict", "scheme": IOB2}),
        ("BIES", {"scheme": "BIOES"}, {"mode": "strict", "scheme": IOBES}),
    ],
)
def test_matches_seqeval_on_random_tags(metric, prefixes, kwargs, seqeval_kwargs):
    rng = random.Random(0)
    references, predictions = _random_tags(rng, prefixes), _random_tags(rng, prefixes)
    predictions = [(p * 9)[: len(r)] for p, r in zip(predictions, references)]  # same lengths
    ours = metric.compute(predictions=predictions, references=references, **kwargs)["overall_f1"]
    assert ours == pytest.approx(f1_score(references, predictions, zero_division=0, **seqeval_kwargs))


def test_iob1_equals_conlleval_on_iob_tags(metric):
    rng = random.Random(1)
    references, predictions = _random_tags(rng, "BI"), _random_tags(rng, "BI")
    predictions = [(p * 9)[: len(r)] for p, r in zip(predictions, references)]
    iob1 = metric.compute(predictions=predictions, references=references, scheme="IOB1")
    assert iob1 == metric.compute(predictions=predictions, references=references)


@pytest.mark.parametrize(
    ("kwargs", "tags", "match"),
    [
        ({}, ["NOUN", "O"], "accuracy metric"),
        ({"scheme": "IOB2"}, ["S-PER", "O"], "Invalid token"),
        ({"scheme": "IOB1"}, ["E-PER", "O"], "not valid in scheme IOB1"),
        ({"mode": "strict"}, ["B-PER", "O"], "needs a scheme"),
        ({"scheme": "BILOU"}, ["B-PER", "O"], "unknown scheme"),
        ({"scheme": "IOB2", "mode": "lenient"}, ["B-PER", "O"], "unknown mode"),
    ],
)
def test_errors(metric, kwargs, tags, match):
    with pytest.raises(ValueError, match=match):
        metric.compute(predictions=[tags], references=[tags], **kwargs)


def test_length_mismatch_names_sentence(metric):
    with pytest.raises(ValueError, match="sentence 1: 1 predicted tags but 2 reference tags"):
        metric.compute(predictions=[["O"], ["O"]], references=[["O"], ["O", "O"]])
