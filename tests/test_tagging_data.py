"""CoNLL / CoNLL-U readers, label maps, sub-word label alignment under padding, and -100 stripping for the metrics."""

import logging
from pathlib import Path

import evaluate
import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerFast

from rnn_lm_hf.data import DataError
from rnn_lm_hf.tagging_data import (
    IGNORE_INDEX,
    build_label_maps,
    label_list,
    load_tagging_dataset,
    read_conll,
    read_conllu,
    strip_ignored,
    tokenize_and_align_labels,
)


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tagging"
METRICS = Path(__file__).resolve().parents[1] / "rnn_lm_hf" / "metrics"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SENTENCES = [
    (["Angela", "Merkel", "visited", "Washington", "yesterday"], ["B-PER", "I-PER", "O", "B-LOC", "O"]),
    (["Apple", "hired", "Mary"], ["B-ORG", "O", "B-PER"]),
    (["New", "York"], ["B-LOC", "I-LOC"]),
]
LABELS = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-PER", "O"]
ID2LABEL, LABEL2ID = build_label_maps(LABELS)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def _batch(sentences=SENTENCES) -> dict[str, list]:
    return {"tokens": [words for words, _ in sentences], "tags": [tags for _, tags in sentences]}


def _write(tmp_path: Path, text: str, name: str = "data.conll", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _shared(name: str) -> Path:
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"shared/data/{name} is not present")
    return SHARED_DATA / name


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    """A WordPiece with a 40-piece vocabulary: most words split into many pieces."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [" ".join(words) for words, _ in SENTENCES]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=40, special_tokens=SPECIALS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tokenizer


def _wrap(tokenizer: Tokenizer, padding_side: str = "right") -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", padding_side=padding_side
    )


def _wordlevel(with_specials: bool) -> Tokenizer:
    vocab = {token: i for i, token in enumerate(SPECIALS + sorted({w for words, _ in SENTENCES for w in words}))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    if with_specials:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    return tokenizer


# ---- readers ---------------------------------------------------------------------------------------------------


def test_read_conll_fixture():
    dataset = read_conll(FIXTURES / "tiny.conll")
    assert dataset.column_names == ["tokens", "tags"]
    assert dataset["tokens"] == [["John", "lives", "in", "New", "York", "."], ["Apple", "hired", "Mary"]]
    assert dataset["tags"][1] == ["B-ORG", "O", "B-PER"]  # -DOCSTART- skipped, last sentence without a blank line
    assert label_list(dataset) == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "O"]


def test_read_conll_columns_and_separators(tmp_path):
    # CoNLL-2003 layout: space-separated, 4 columns, tag last; a whitespace-only line (WNUT-17) is a sentence break.
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\t\nPeter NNP B-NP B-PER\n"
    dataset = read_conll(_write(tmp_path, text))
    assert dataset["tokens"] == [["EU", "rejects"], ["Peter"]]
    assert dataset["tags"] == [["B-ORG", "O"], ["B-PER"]]
    assert read_conll(_write(tmp_path, text), tag_column=1)["tags"][0] == ["NNP", "VBZ"]
    # Tab-separated tokens may hold a no-break space; only tabs split them.
    assert read_conll(_write(tmp_path, "10\u00a0000\tO\n"))["tokens"] == [["10\u00a0000"]]
    unlabeled = read_conll(_write(tmp_path, "hello\nworld\n"), tag_column=None)
    assert unlabeled.column_names == ["tokens"] and unlabeled["tokens"] == [["hello", "world"]]


def test_read_conllu_fixture(caplog):
    with caplog.at_level(logging.WARNING):
        dataset = read_conllu(FIXTURES / "tiny.conllu")
    # multiword range 1-2 and empty node 1.1 skipped; the comment-only block skipped with a warning count
    assert dataset["tokens"] == [["Do", "n't", "go", "."], ["Cats", "sleep"]]
    assert dataset["tags"] == [["AUX", "PART", "VERB", "PUNCT"], ["NOUN", "VERB"]]
    assert "skipped 1 empty sentence(s)" in caplog.text
    assert read_conllu(FIXTURES / "tiny.conllu", tag="xpos")["tags"][0] == ["VBP", "RB", "VB", "."]


def test_unknown_label_names_file_line_and_fix(tmp_path):
    path = _write(tmp_path, "Paris\tB-LOC\nrocks\tO\n\nBob\tB-PERSON\n")
    with pytest.raises(DataError, match=r"data\.conll:4: unknown label 'B-PERSON'.*--unknown_label O"):
        read_conll(path, labels=LABELS)
    assert read_conll(path, labels=LABELS, unknown_label="O")["tags"] == [["B-LOC", "O"], ["O"]]
    with pytest.raises(ValueError, match="unknown_label 'X' is not one of the labels"):
        read_conll(path, labels=LABELS, unknown_label="X")
    conllu = _write(tmp_path, "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n", "x.conllu")
    with pytest.raises(DataError, match=r"x\.conllu:1: unknown label 'INTJ'"):
        read_conllu(conllu, labels=["NOUN"])


def test_load_tagging_dataset_uses_train_labels(tmp_path):
    train = _write(tmp_path, "Paris\tB-LOC\nrocks\tO\n", "train.conll")
    dev = _write(tmp_path, "Bob\tB-PER\n", "dev.conll")
    with pytest.raises(DataError, match=r"dev\.conll:1: unknown label 'B-PER'"):
        load_tagging_dataset({"train": train, "validation": dev})
    splits = load_tagging_dataset({"validation": dev, "train": train}, unknown_label="O")
    assert list(splits) == ["validation", "train"] and splits["validation"]["tags"] == [["O"]]
    conllu = load_tagging_dataset({"train": FIXTURES / "tiny.conllu"}, tag="xpos")
    assert conllu["train"]["tags"][1] == ["NNS", "VBP"]


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a\tO\nb\tO\textra\n", {}, r"data\.conll:2: 3 column\(s\), but the first token line has 2"),
        ("just tokens\nhere\n", {}, r"data\.conll:2: 1 column\(s\), but the first token line has 2"),
        ("tokens\nonly\n", {}, r"data\.conll:1: no tag column .*tag_column=None"),
        ("a\tO\n", {"tag_column": 5}, r"data\.conll:1: no tag column"),
        ("a\tO\n", {"token_column": 3}, r"data\.conll:1: no token column 3"),
        ("\tO\n", {}, r"data\.conll:1: empty token"),
        ("\n\n", {}, r"data\.conll: no sentences found"),
        ("", {}, r"data\.conll: no sentences found"),
    ],
)
def test_read_conll_errors(tmp_path, text, kwargs, match):
    with pytest.raises(DataError, match=match):
        read_conll(_write(tmp_path, text), **kwargs)


def test_read_errors_bad_encoding_and_conllu_layout(tmp_path):
    latin1 = _write(tmp_path, "ok\tO\n\ncaf\u00e9\tO\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"data\.conll:3: not valid utf-8 \(byte 0xe9\).*--encoding latin-1"):
        read_conll(latin1)
    assert read_conll(latin1, encoding="latin-1")["tokens"][1] == ["caf\u00e9"]
    with pytest.raises(DataError, match="unknown encoding"):
        read_conll(latin1, encoding="no-such-codec")
    with pytest.raises(DataError, match=r"x\.conllu:2: 2 tab-separated column\(s\), CoNLL-U needs 10"):
        read_conllu(_write(tmp_path, "# c\nword\tNOUN\n", "x.conllu"))
    with pytest.raises(ValueError, match="tag must be one of"):
        read_conllu(FIXTURES / "tiny.conllu", tag="deprel")


def test_label_maps():
    assert label_list([{"tags": ["O", "B-X"]}], [{"tags": ["I-X"]}]) == ["B-X", "I-X", "O"]
    id2label, label2id = build_label_maps(["O", "B-X"])
    assert id2label == {0: "O", 1: "B-X"} and label2id == {"O": 0, "B-X": 1}
    with pytest.raises(ValueError, match="duplicate"):
        build_label_maps(["O", "O"])


# ---- alignment -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_specials", [False, True])
def test_align_word_level_tokenizer(with_specials):
    tokenizer = _wrap(_wordlevel(with_specials))
    encoded = tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID)
    for row, (_, tags) in enumerate(SENTENCES):
        expected = [LABEL2ID[tag] for tag in tags]
        if with_specials:
            expected = [IGNORE_INDEX, *expected, IGNORE_INDEX]  # [CLS] ... [SEP]
        assert encoded["labels"][row] == expected
        assert len(encoded["input_ids"][row]) == len(expected)


def test_align_subwords_first_piece_gets_label(wordpiece):
    tokenizer = _wrap(wordpiece)
    encoded = tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID)
    longest = 0
    for row, (words, tags) in enumerate(SENTENCES):
        word_ids, labels = encoded.word_ids(row), encoded["labels"][row]
        assert len(labels) == len(word_ids) > len(words) + 2  # words split into pieces
        for position, word in enumerate(word_ids):
            first_piece = word is not None and (position == 0 or word_ids[position - 1] != word)
            assert labels[position] == (LABEL2ID[tags[word]] if first_piece else IGNORE_INDEX)
        longest = max(longest, max(word_ids[1:-1].count(w) for w in range(len(words))))
        assert [label for label in labels if label != IGNORE_INDEX] == [LABEL2ID[tag] for tag in tags]
    assert longest >= 4  # some word is split into 4 or more pieces


def test_align_label_all_tokens_uses_i_for_b(wordpiece):
    encoded = tokenize_and_align_labels(_batch(), _wrap(wordpiece), LABEL2ID, label_all_tokens=True)
    word_ids, labels = encoded.word_ids(0), encoded["labels"][0]
    angela = [labels[i] for i, w in enumerate(word_ids) if w == 0]  # "Angela", B-PER
    assert len(angela) > 1 and angela == [LABEL2ID["B-PER"]] + [LABEL2ID["I-PER"]] * (len(angela) - 1)
    visited = [labels[i] for i, w in enumerate(word_ids) if w == 2]  # "visited", O
    assert set(visited) == {LABEL2ID["O"]}
    apple = [encoded["labels"][1][i] for i, w in enumerate(encoded.word_ids(1)) if w == 0]  # B-ORG: no I-ORG label
    assert set(apple) == {LABEL2ID["B-ORG"]}


def _handmade(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A WordPiece with a fixed vocabulary: Washington -> Wash ##ing ##ton, visited -> visit ##ed, others whole."""
    vocab = [*SPECIALS, "Mary", "visit", "##ed", "Wash", "##ing", "##ton", "New", "York"]
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return _wrap(tokenizer, padding_side)


HANDMADE = [(["Mary", "visited", "Washington"], ["B-PER", "O", "B-LOC"]), (["New", "York"], ["B-LOC", "I-LOC"])]
_P, _ID = IGNORE_INDEX, LABEL2ID
HANDMADE_PIECES = [
    ["[CLS]", "Mary", "visit", "##ed", "Wash", "##ing", "##ton", "[SEP]"],
    ["[CLS]", "New", "York", "[SEP]"],
]
HANDMADE_LABELS = {  # unpadded, per label_sub_token
    "first": [
        [_P, _ID["B-PER"], _ID["O"], _P, _ID["B-LOC"], _P, _P, _P],
        [_P, _ID["B-LOC"], _ID["I-LOC"], _P],
    ],
    "last": [
        [_P, _ID["B-PER"], _P, _ID["O"], _P, _P, _ID["B-LOC"], _P],
        [_P, _ID["B-LOC"], _ID["I-LOC"], _P],
    ],
}


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("label_sub_token", ["first", "last"])
def test_align_handmade_first_or_last_piece(padding_side, label_sub_token):
    tokenizer = _handmade(padding_side)
    unpadded = tokenize_and_align_labels(_batch(HANDMADE), tokenizer, LABEL2ID, label_sub_token=label_sub_token)
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in unpadded["input_ids"]] == HANDMADE_PIECES
    assert unpadded["labels"] == HANDMADE_LABELS[label_sub_token]  # single-piece words the same in both modes
    # padded in the map and by the collator: the short row's padding is -100 on its side, nothing else moves
    n_pad = len(HANDMADE_PIECES[0]) - len(HANDMADE_PIECES[1])
    short = HANDMADE_LABELS[label_sub_token][1]
    expected = [
        HANDMADE_LABELS[label_sub_token][0],
        [_P] * n_pad + short if padding_side == "left" else short + [_P] * n_pad,
    ]
    padded = tokenize_and_align_labels(
        _batch(HANDMADE), tokenizer, LABEL2ID, padding="longest", label_sub_token=label_sub_token
    )
    assert padded["labels"] == expected
    features = [{key: unpadded[key][row] for key in ("input_ids", "labels")} for row in range(len(HANDMADE))]
    assert DataCollatorForTokenClassification(tokenizer, return_tensors="np")(features)["labels"].tolist() == expected


def test_align_last_piece_with_truncation_and_word_level():
    # a word cut by truncation is labelled at its last piece that is left: [CLS] Mary visit ##ed Wash [SEP]
    cut = tokenize_and_align_labels(_batch(HANDMADE[:1]), _handmade(), LABEL2ID, max_length=6, label_sub_token="last")
    assert cut["labels"] == [[_P, _ID["B-PER"], _P, _ID["O"], _ID["B-LOC"], _P]]
    word_level = _wrap(_wordlevel(True))  # one token per word: first and last agree
    first, last = (
        tokenize_and_align_labels(_batch(), word_level, LABEL2ID, label_sub_token=m) for m in ("first", "last")
    )
    assert first["labels"] == last["labels"]


def test_align_last_piece_on_many_piece_words(wordpiece):
    encoded = tokenize_and_align_labels(_batch(), _wrap(wordpiece), LABEL2ID, label_sub_token="last")
    longest = 0
    for row, (words, tags) in enumerate(SENTENCES):
        word_ids, labels = encoded.word_ids(row), encoded["labels"][row]
        for position, word in enumerate(word_ids):
            last_piece = word is not None and (position == len(word_ids) - 1 or word_ids[position + 1] != word)
            assert labels[position] == (LABEL2ID[tags[word]] if last_piece else IGNORE_INDEX)
        longest = max(longest, max(word_ids.count(w) for w in range(len(words))))
    assert longest >= 3  # some word is split into 3 or more pieces


def test_label_sub_token_errors(wordpiece):
    tokenizer = _wrap(wordpiece)
    with pytest.raises(ValueError, match=r"label_sub_token must be one of 'first', 'last', got 'middle'"):
        tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID, label_sub_token="middle")
    with pytest.raises(ValueError, match=r"label_all_tokens .* only goes with label_sub_token='first'"):
        tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID, label_all_tokens=True, label_sub_token="last")


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("kind", ["wordpiece", "wordlevel"])
def test_padding_never_shifts_labels(wordpiece, padding_side, kind):
    tokenizer = _wrap(wordpiece if kind == "wordpiece" else _wordlevel(True), padding_side)
    unpadded = tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID)
    features = [{key: unpadded[key][row] for key in ("input_ids", "labels")} for row in range(len(SENTENCES))]
    collated = DataCollatorForTokenClassification(tokenizer)(features)
    padded_in_map = tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID, padding="longest")
    for batch in (collated, {key: np.asarray(value) for key, value in padded_in_map.items()}):
        input_ids, labels = np.asarray(batch["input_ids"]), np.asarray(batch["labels"])
        mask = np.asarray(batch["attention_mask"]).astype(bool)
        for row in range(len(SENTENCES)):
            n_real = len(unpadded["input_ids"][row])
            real, pad = [True] * n_real, [False] * (len(mask[row]) - n_real)
            assert mask[row].tolist() == (pad + real if padding_side == "left" else real + pad)
            # every real token keeps its own label: (id, label) pairs equal the unpadded ones
            assert input_ids[row][mask[row]].tolist() == unpadded["input_ids"][row]
            assert labels[row][mask[row]].tolist() == unpadded["labels"][row]
            assert (labels[row][~mask[row]] == IGNORE_INDEX).all()
        assert (~mask).any()  # the batch really was padded


def test_align_truncation_unlabeled_and_errors(wordpiece):
    tokenizer = _wrap(wordpiece)
    truncated = tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID, max_length=6)
    assert all(len(ids) <= 6 for ids in truncated["input_ids"])
    assert all(len(ids) == len(labels) for ids, labels in zip(truncated["input_ids"], truncated["labels"]))
    unlabeled = tokenize_and_align_labels({"tokens": _batch()["tokens"]}, tokenizer, LABEL2ID)
    assert "labels" not in unlabeled
    with pytest.raises(DataError, match=r"unknown label 'B-MISC' in sentence 'New York'.*--unknown_label O"):
        tokenize_and_align_labels({"tokens": [["New", "York"]], "tags": [["B-MISC", "O"]]}, tokenizer, LABEL2ID)
    with pytest.raises(ValueError, match="batched=True"):
        tokenize_and_align_labels({"tokens": ["New", "York"], "tags": ["B-LOC", "I-LOC"]}, tokenizer, LABEL2ID)
    # Tags of another length than the tokens would tag the wrong words (or end in an IndexError).
    for tags in (["B-LOC"], ["B-LOC", "I-LOC", "O"]):
        with pytest.raises(DataError, match=rf"'New York' has 2 tokens but {len(tags)} tags: give every token"):
            tokenize_and_align_labels({"tokens": [["New", "York"]], "tags": [tags]}, tokenizer, LABEL2ID)


def test_align_warns_when_a_word_gives_no_token(caplog):
    tokenizer = _wordlevel(False)
    tokenizer.normalizer = normalizers.Replace("\u200b", "")  # a zero-width space vanishes
    examples = {"tokens": [["New", "\u200b", "York"]], "tags": [["B-LOC", "O", "I-LOC"]]}
    with caplog.at_level(logging.WARNING):
        encoded = tokenize_and_align_labels(examples, _wrap(tokenizer), LABEL2ID)
    assert encoded["labels"] == [[LABEL2ID["B-LOC"], LABEL2ID["I-LOC"]]]
    assert "1 word(s) gave no token" in caplog.text


def test_align_via_dataset_map(wordpiece):
    dataset = read_conll(FIXTURES / "tiny.conll")
    id2label, label2id = build_label_maps(label_list(dataset))
    mapped = dataset.map(
        tokenize_and_align_labels,
        batched=True,
        remove_columns=dataset.column_names,
        fn_kwargs={"tokenizer": _wrap(wordpiece), "label2id": label2id},
    )
    assert {"input_ids", "attention_mask", "labels"} <= set(mapped.column_names)
    assert [sum(label != IGNORE_INDEX for label in row) for row in mapped["labels"]] == [6, 3]


# ---- metrics input ---------------------------------------------------------------------------------------------


def test_ignored_positions_never_counted(wordpiece):
    tokenizer = _wrap(wordpiece, "left")
    features = tokenize_and_align_labels(_batch(), tokenizer, LABEL2ID)
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in zip(features["input_ids"], features["labels"])]
    labels = DataCollatorForTokenClassification(tokenizer, return_tensors="np")(rows)["labels"]
    # perfect at real positions, a wrong B-ORG wherever the label is -100 (specials, padding, later pieces)
    predicted = np.where(labels == IGNORE_INDEX, LABEL2ID["B-ORG"], labels)
    logits = np.eye(len(LABELS))[predicted]  # (batch, seq_len, num_labels)
    pred_tags, true_tags = strip_ignored(logits, labels, ID2LABEL)
    assert true_tags == [tags for _, tags in SENTENCES] and pred_tags == true_tags
    seqeval = evaluate.load(str(METRICS / "seqeval_f1"), keep_in_memory=True)
    out = seqeval.compute(predictions=pred_tags, references=true_tags)
    assert out["overall_f1"] == 1.0 and out["overall_accuracy"] == 1.0
    accuracy = evaluate.load(str(METRICS / "accuracy"), keep_in_memory=True)
    assert accuracy.compute(predictions=predicted, references=labels)["accuracy"] == 1.0


@pytest.mark.parametrize("label_sub_token", ["first", "last"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_strip_ignored_one_tag_per_word(wordpiece, label_sub_token, padding_side):
    for tokenizer, sentences in ((_wrap(wordpiece, padding_side), SENTENCES), (_handmade(padding_side), HANDMADE)):
        features = tokenize_and_align_labels(_batch(sentences), tokenizer, LABEL2ID, label_sub_token=label_sub_token)
        rows = [{"input_ids": ids, "labels": y} for ids, y in zip(features["input_ids"], features["labels"])]
        labels = DataCollatorForTokenClassification(tokenizer, return_tensors="np")(rows)["labels"]
        # a wrong tag at every -100 position: it must never show up
        predicted = np.where(labels == IGNORE_INDEX, LABEL2ID["B-ORG"], labels)
        pred_tags, true_tags = strip_ignored(predicted, labels, ID2LABEL)
        assert true_tags == pred_tags == [tags for _, tags in sentences]
        assert [len(tags) for tags in pred_tags] == [len(words) for words, _ in sentences]


def test_strip_ignored_inputs():
    labels = np.array([[IGNORE_INDEX, 0, 5, IGNORE_INDEX]])
    predictions = np.array([[3, 0, 2, 3]])
    assert strip_ignored(predictions, labels, ID2LABEL) == ([["B-LOC", "B-PER"]], [["B-LOC", "O"]])
    str_keys = {str(i): label for i, label in ID2LABEL.items()}  # id2label read back from JSON
    assert strip_ignored((predictions, None), labels, str_keys) == ([["B-LOC", "B-PER"]], [["B-LOC", "O"]])
    with pytest.raises(ValueError, match="shape"):
        strip_ignored(predictions[:, :2], labels, ID2LABEL)


# ---- real data (skipped when ../shared/data is absent) ---------------------------------------------------------


def test_wnut17_real_data():
    folder = _shared("wnut17")
    splits = load_tagging_dataset(
        {
            "train": folder / "wnut17train.conll",
            "validation": folder / "emerging.dev.conll",
            "test": folder / "emerging.test.annotated",
        }
    )
    assert {split: len(data) for split, data in splits.items()} == {"train": 3394, "validation": 1009, "test": 1287}
    assert sum(map(len, splits["train"]["tokens"])) == 62730
    labels = label_list(splits["train"])
    assert len(labels) == 13 and sum(tags.count("B-person") for tags in splits["train"]["tags"]) == 660


def test_ud_ewt_real_data():
    folder = _shared("ud_english_ewt")
    dev = read_conllu(folder / "en_ewt-ud-dev.conllu")
    assert len(dev) == 2001 and sum(map(len, dev["tokens"])) == 25147  # syntactic words, no ranges or empty nodes
    upos = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT"]
    assert label_list(dev) == [*upos, "SCONJ", "SYM", "VERB", "X"]  # the 17 UPOS tags
    test = read_conllu(folder / "en_ewt-ud-test.conllu", tag="xpos")
    assert len(test) == 2077 and "NNP" in label_list(test)
