"""Token-classification data: CoNLL / CoNLL-U readers, label maps, sub-word label alignment and -100 stripping.

Readers return a `datasets.Dataset` with `tokens` and `tags` columns (lists of strings). Tags stay strings until
`tokenize_and_align_labels` maps them to ids, as in transformers' `run_ner.py`. Format problems raise
`DataError` with a one-line message naming the file, the line and the fix.
"""

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import datasets
import numpy as np

from .data import DataError
from .modeling_rnn_lm import IGNORE_INDEX


logger = logging.getLogger(__name__)

LABEL_SUB_TOKENS = ("first", "last")  # which sub-token of a word carries its tag (tokenize_and_align_labels)

_CONLLU_TAG_COLUMNS = {"upos": 3, "xpos": 4}
_ASCII_SPACE = " \t\r\n\f\v"


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Reads a text file, turning a decoding failure into a `DataError` that names the line and the fix."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} (byte 0x{data[err.start]:02x}); "
            "pass the file's encoding, e.g. --encoding latin-1"
        ) from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark would glue onto the first token


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """Lines of a text file without their line ends (see `read_text`)."""
    # Split on "\n" only: str.splitlines() also breaks at U+0085 and U+2028, and rt-polarity read as Latin-1 has
    # U+0085 (byte 0x85, a cp1252 ellipsis) inside sentences.
    lines = [line.removesuffix("\r") for line in read_text(path, encoding).split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_jsonl(path: str | Path, encoding: str = "utf-8") -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a jsonl file; a `DataError` names a line that is not a JSON
    object."""
    rows = []
    for lineno, line in enumerate(read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg}); write one object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


class _LabelChecker:
    """Checks tags against a known label set, mapping unknown ones to `unknown_label` when it is given."""

    def __init__(self, labels: Iterable[str] | None, unknown_label: str | None):
        self.labels = set(labels) if labels is not None else None
        if unknown_label is not None and self.labels is not None and unknown_label not in self.labels:
            raise ValueError(f"unknown_label {unknown_label!r} is not one of the labels {sorted(self.labels)}")
        self.unknown_label = unknown_label
        self.n_mapped = 0

    def __call__(self, tag: str, where: str) -> str:
        if self.labels is None or tag in self.labels:
            return tag
        if self.unknown_label is None:
            raise DataError(
                f"{where}: unknown label {tag!r} (not among the {len(self.labels)} training labels); "
                f"map unseen labels with --unknown_label O, or add {tag!r} to the label list"
            )
        self.n_mapped += 1
        return self.unknown_label

    def report(self, path: Path) -> None:
        if self.n_mapped:
            logger.warning("%s: mapped %d unknown tag(s) to %r", path, self.n_mapped, self.unknown_label)


def _to_dataset(path: Path, tokens: list, tags: list | None, n_empty: int) -> datasets.Dataset:
    if n_empty:
        logger.warning("%s: skipped %d empty sentence(s) (blocks without any token line)", path, n_empty)
    if not tokens:
        raise DataError(f"{path}: no sentences found (empty file?)")
    columns = {"tokens": tokens} if tags is None else {"tokens": tokens, "tags": tags}
    features = datasets.Features({name: datasets.Sequence(datasets.Value("string")) for name in columns})
    return datasets.Dataset.from_dict(columns, features=features)


def read_conll(
    path: str | Path,
    token_column: int = 0,
    tag_column: int | None = -1,
    encoding: str = "utf-8",
    labels: Iterable[str] | None = None,
    unknown_label: str | None = None,
) -> datasets.Dataset:
    """Reads a CoNLL-style column file (CoNLL-2003, WNUT-17): one token per line, a blank line between sentences.

    Columns are tab-separated when the line has a tab, else whitespace-separated. `-DOCSTART-` lines are skipped and
    whitespace-only lines count as blank (WNUT-17 train separates posts with a lone tab). `tag_column=None` reads
    unlabeled text (no `tags` column). With `labels`, every tag must be one of them or is mapped to `unknown_label`.
    """
    path = Path(path)
    check = _LabelChecker(labels, unknown_label)
    all_tokens, all_tags = [], []
    tokens, tags = [], []
    n_columns = None
    for lineno, line in enumerate([*read_lines(path, encoding), ""], start=1):  # "" flushes the last sentence
        stripped = line.rstrip(_ASCII_SPACE)  # ASCII only: tokens may hold U+00A0 or U+3000
        if not stripped:
            if tokens:
                all_tokens.append(tokens)
                all_tags.append(tags)
            tokens, tags = [], []
            continue
        columns = stripped.split("\t") if "\t" in stripped else [c for c in stripped.split(" ") if c]
        if columns[0] == "-DOCSTART-":  # CoNLL-2003 document marker, not a token
            continue
        if n_columns is None:
            n_columns = len(columns)
            _check_conll_columns(path, lineno, n_columns, token_column, tag_column)
        elif len(columns) != n_columns:
            raise DataError(
                f"{path}:{lineno}: {len(columns)} column(s), but the first token line has {n_columns}; "
                "separate columns with one tab and write one token per line"
            )
        if not columns[token_column]:
            raise DataError(f"{path}:{lineno}: empty token (line starts with a tab)")
        if " " in columns[token_column].strip(_ASCII_SPACE):  # e.g. 'a dull , tedious mess<TAB>0'
            raise DataError(
                f"{path}:{lineno}: the token {columns[token_column].strip(_ASCII_SPACE)[:40]!r} holds spaces, so this "
                "is not a tagging file (one 'token<TAB>tag' line per token, a blank line between sentences); a "
                "'text<TAB>label' file is for rnn-lm train-classifier"
            )
        tokens.append(columns[token_column])
        if tag_column is not None:
            tags.append(check(columns[tag_column], f"{path}:{lineno}"))
    check.report(path)
    return _to_dataset(path, all_tokens, None if tag_column is None else all_tags, n_empty=0)


def _check_conll_columns(path: Path, lineno: int, n_columns: int, token_column: int, tag_column: int | None) -> None:
    token_index = token_column % n_columns if -n_columns <= token_column < n_columns else None
    if token_index is None:
        raise DataError(f"{path}:{lineno}: no token column {token_column} (the line has {n_columns} column(s))")
    if tag_column is None:
        return
    tag_index = tag_column % n_columns if -n_columns <= tag_column < n_columns else None
    if tag_index is None or tag_index == token_index:
        raise DataError(
            f"{path}:{lineno}: no tag column (the line has {n_columns} column(s)); expected 'token<TAB>tag' lines, "
            "or pass tag_column=None to read unlabeled text"
        )


def read_conllu(
    path: str | Path,
    tag: str = "upos",
    encoding: str = "utf-8",
    labels: Iterable[str] | None = None,
    unknown_label: str | None = None,
) -> datasets.Dataset:
    """Reads a CoNLL-U file (Universal Dependencies) into FORM tokens and UPOS or XPOS tags.

    Comment lines are skipped, and so are multiword-token ranges (`3-4`) and empty nodes (`8.1`), which are not
    syntactic words. A block with no word line is skipped and counted in one warning.
    """
    if tag not in _CONLLU_TAG_COLUMNS:
        raise ValueError(f"tag must be one of {sorted(_CONLLU_TAG_COLUMNS)}, got {tag!r}")
    path, column = Path(path), _CONLLU_TAG_COLUMNS[tag]
    check = _LabelChecker(labels, unknown_label)
    all_tokens, all_tags = [], []
    tokens, tags = [], []
    in_block, n_empty = False, 0
    for lineno, line in enumerate([*read_lines(path, encoding), ""], start=1):  # "" flushes the last sentence
        if not line.strip(_ASCII_SPACE):
            if tokens:
                all_tokens.append(tokens)
                all_tags.append(tags)
            n_empty += in_block and not tokens
            tokens, tags, in_block = [], [], False
            continue
        in_block = True
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 10:
            raise DataError(
                f"{path}:{lineno}: {len(columns)} tab-separated column(s), CoNLL-U needs 10 "
                "(for 'token<TAB>tag' files use read_conll)"
            )
        if "-" in columns[0] or "." in columns[0]:
            continue
        tokens.append(columns[1])
        tags.append(check(columns[column], f"{path}:{lineno}"))
    check.report(path)
    return _to_dataset(path, all_tokens, all_tags, n_empty)


def load_tagging_dataset(
    data_files: Mapping[str, str | Path],
    file_format: str | None = None,
    labels: Sequence[str] | None = None,
    unknown_label: str | None = None,
    **reader_kwargs,
) -> datasets.DatasetDict:
    """Reads splits (e.g. {"train": ..., "validation": ..., "test": ...}) with `read_conll` or `read_conllu`.

    `file_format` is "conll" or "conllu" (default: "conllu" for `*.conllu` files). The label set is `labels`, or
    else the tags of the train split; the other splits are checked against it, naming the file and line of any
    unknown tag (or mapping it to `unknown_label`).
    """
    splits = {}
    for split in sorted(data_files, key=lambda name: name != "train"):  # train first: it defines the labels
        path = Path(data_files[split])
        fmt = file_format or ("conllu" if path.suffix == ".conllu" else "conll")
        if fmt not in ("conll", "conllu"):
            raise ValueError(f"file_format must be 'conll' or 'conllu', got {fmt!r}")
        reader = read_conllu if fmt == "conllu" else read_conll
        splits[split] = reader(path, labels=labels, unknown_label=unknown_label, **reader_kwargs)
        if labels is None and split == "train":
            labels = label_list(splits["train"])
    return datasets.DatasetDict({split: splits[split] for split in data_files})


def label_list(*sources: datasets.Dataset | Iterable[Mapping], column: str = "tags") -> list[str]:
    """Sorted unique tags of one or more datasets (pass the training data only, as run_ner does)."""
    found = set()
    for source in sources:
        rows = source[column] if isinstance(source, datasets.Dataset) else (row[column] for row in source)
        for tags in rows:
            found.update(tags)
    return sorted(found)


def build_label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """`id2label` and `label2id` for the model config, in the order of `labels`."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {list(labels)}")
    return dict(enumerate(labels)), {label: i for i, label in enumerate(labels)}


def tokenize_and_align_labels(
    examples: Mapping[str, list],
    tokenizer,
    label2id: Mapping[str, int],
    label_all_tokens: bool = False,
    max_length: int | None = None,
    padding: bool | str = False,
    tokens_column: str = "tokens",
    tags_column: str = "tags",
    label_sub_token: str = "first",
):
    """Tokenizes pre-split words and gives each word's tag id to one of its sub-tokens (`datasets.map(batched=True)`).

    `label_sub_token` picks that sub-token: "first" (run_ner's rule, for bidirectional encoders) or "last", for
    unidirectional (left-to-right) encoders such as taggers initialised from a causal LM: they read a word's first
    piece before the rest of it, so only at its last piece have they seen the whole word. A word cut by truncation
    is labelled at its last piece that is left. Special tokens and padding (on either side) get -100, and so do the
    other sub-tokens of a word, unless `label_all_tokens` (only with "first"): then they get the word's tag, with
    `B-X` turned into `I-X` (run_ner's rule; metrics then count sub-tokens). Works for word-level tokenizers (one
    token per word, where both choices agree) and sub-word ones; needs a fast tokenizer for `word_ids()`. Without a
    `tags_column` in `examples` (unlabeled text) it only tokenizes.
    """
    if label_sub_token not in LABEL_SUB_TOKENS:
        raise ValueError(
            f"label_sub_token must be one of {', '.join(map(repr, LABEL_SUB_TOKENS))}, got {label_sub_token!r}"
        )
    if label_all_tokens and label_sub_token != "first":
        raise ValueError(
            "label_all_tokens puts the word's tag on its first sub-token and continuation tags on the others, so it "
            f"only goes with label_sub_token='first' (got {label_sub_token!r}); drop one of the two"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("tokenize_and_align_labels needs a fast tokenizer (word_ids() comes from `tokenizers`)")
    words = examples[tokens_column]
    if words and isinstance(words[0], str):
        raise ValueError("pass a batch of sentences: use dataset.map(..., batched=True)")
    encoded = tokenizer(
        words, is_split_into_words=True, truncation=max_length is not None, max_length=max_length, padding=padding
    )
    if tags_column not in examples:
        return encoded
    # Continuation sub-tokens of a B-X word get I-X when label_all_tokens (a second B-X would open a new entity).
    continuation = {
        i: label2id.get("I-" + label[2:], i) if label.startswith("B-") else i for label, i in label2id.items()
    }
    all_labels, n_vanished = [], 0
    for row, tags in enumerate(examples[tags_column]):
        if len(tags) != len(words[row]):  # would tag the wrong words, or fail deep inside with an IndexError
            sentence = " ".join(words[row][:8]) + (" ..." if len(words[row]) > 8 else "")
            raise DataError(
                f"sentence {sentence!r} has {len(words[row])} {tokens_column} but {len(tags)} {tags_column}: give "
                "every token exactly one tag"
            )
        word_ids = encoded.word_ids(batch_index=row)  # None for special tokens and padding, on either side
        seen = {word for word in word_ids if word is not None}
        n_vanished += sum(word not in seen for word in range(max(seen, default=-1)))  # before any truncation point
        label_ids = []
        for position, word in enumerate(word_ids):
            if word is None:
                label_ids.append(IGNORE_INDEX)
                continue
            if label_sub_token == "first":
                labelled = position == 0 or word_ids[position - 1] != word
            else:
                labelled = position == len(word_ids) - 1 or word_ids[position + 1] != word
            if labelled:
                label_ids.append(_label_id(label2id, tags[word], words[row]))
            elif label_all_tokens:
                label_ids.append(continuation[_label_id(label2id, tags[word], words[row])])
            else:
                label_ids.append(IGNORE_INDEX)
        all_labels.append(label_ids)
    if n_vanished:
        logger.warning(
            "%d word(s) gave no token (the normalizer removed them, e.g. a zero-width space): "
            "their tags are neither trained nor scored",
            n_vanished,
        )
    encoded["labels"] = all_labels
    return encoded


def _label_id(label2id: Mapping[str, int], tag: str, words: list[str]) -> int:
    try:
        return label2id[tag]
    except KeyError:
        sentence = " ".join(words[:8]) + (" ..." if len(words) > 8 else "")
        raise DataError(
            f"unknown label {tag!r} in sentence {sentence!r}; map unseen labels with --unknown_label O or add it "
            "to the label list (read the file with labels=... to get its line number)"
        ) from None


def strip_ignored(
    predictions,
    labels,
    id2label: Mapping[int, str] | Mapping[str, str],
    ignore_index: int = IGNORE_INDEX,
) -> tuple[list[list[str]], list[list[str]]]:
    """Turns (batch, seq_len) label ids, and predicted ids or logits, into tag strings without the -100 positions.

    The result feeds the seqeval_f1 metric, so special tokens, padding and the unlabelled sub-tokens of a word (all
    but its first, or all but its last with `label_sub_token="last"`) are never counted: one tag per word, in order.
    `predictions` may be logits (batch, seq_len, num_labels), argmax-ed here, or a tuple whose first item is either.
    """
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(-1)  # (batch, seq_len, num_labels) -> (batch, seq_len)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions have shape {predictions.shape} but labels have shape {labels.shape}")

    def name(i: int) -> str:
        # Configs loaded from JSON may carry str keys.
        return id2label[i] if i in id2label else id2label[str(i)]

    true_tags, pred_tags = [], []
    for pred_row, label_row in zip(predictions.tolist(), labels.tolist()):
        kept = [(p, t) for p, t in zip(pred_row, label_row) if t != ignore_index]
        pred_tags.append([name(p) for p, _ in kept])
        true_tags.append([name(t) for _, t in kept])
    return pred_tags, true_tags
