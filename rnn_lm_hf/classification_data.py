"""Sentence-classification data: tsv/csv/jsonl, GLUE SST-2, `stsa.binary.*`, one file per class, k-fold splits.

Every reader returns a `datasets.Dataset` with a `text` column and, for labeled data, a `label` column: the labels as
written in the file (strings), or a `ClassLabel` when `label_names` is given. Format problems raise
`DataError` with a one-line message naming the file, the line and the fix.
"""

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import datasets
import numpy as np

from .data import DataError
from .tagging_data import read_jsonl, read_lines, read_text


logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("sentence", "text")  # auto-detected text column names, in order of preference
LABEL_COLUMNS = ("label",)
FILE_FORMATS = ("tsv", "csv", "jsonl", "label_first")


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Sorted label names; numeric labels sort as numbers, so "0", "1", ... keep their ids (SST-2: 0 = negative)."""
    labels = set(labels)
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def class_names(*sources: datasets.Dataset, column: str = "label") -> list[str]:
    """Sorted unique labels of one or more datasets (pass the training data)."""
    return sort_labels(label for source in sources for label in source[column])


def _infer_format(path: Path) -> str:
    if path.name.startswith("stsa."):
        return "label_first"
    suffix = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower())
    if suffix is None:
        raise DataError(f"{path}: can't tell the layout from the file name; pass file_format= one of {FILE_FORMATS}")
    return suffix


def _pick_column(path: Path, found: Sequence[str], given: str | None, candidates: tuple[str, ...], kind: str) -> str:
    if given is not None:
        if given not in found:
            raise DataError(f"{path}: no {kind} column {given!r}; columns found: {list(found)}")
        return given
    for name in candidates:
        if name in found:
            return name
    raise DataError(
        f"{path}: no {kind} column (looked for {list(candidates)}); columns found: {list(found)}; "
        f"pass --{kind}_column" + (", or read it as unlabeled (labeled=False)" if kind == "label" else "")
    )


def _read_table(path: Path, file_format: str, encoding: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line number, row dict), ...]) of a tsv, csv or jsonl file."""
    if file_format == "jsonl":
        rows = read_jsonl(path, encoding)
        return (list(rows[0][1]) if rows else []), rows
    # GLUE tsv files are unquoted and hold literal '"' characters, so tsv reads with quoting off.
    quoting, delimiter = (csv.QUOTE_NONE, "\t") if file_format == "tsv" else (csv.QUOTE_MINIMAL, ",")
    reader = csv.reader(io.StringIO(read_text(path, encoding), newline=""), delimiter=delimiter, quoting=quoting)
    header, rows = [], []
    try:
        header = next(reader, [])
        for fields in reader:  # reader.line_num: the record's last line (a quoted csv field may span lines)
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: {len(fields)} field(s), but the header has {len(header)} ({header})"
                )
            rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: {err}") from None
    return header, rows


def read_classification_file(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    file_format: str | None = None,
    encoding: str = "utf-8",
    labeled: bool = True,
    label_names: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Reads one labeled (or, with `labeled=False`, unlabeled) sentence file.

    Layouts (`file_format`, inferred from the name when None):
    - "tsv" / "csv" with a header, e.g. GLUE SST-2 `train.tsv` (`sentence<TAB>label`); "jsonl", one object a line.
      The text column defaults to "sentence" or "text", the label column to "label".
    - "label_first": `<label> <sentence>` per line, the sentence-level SST-2 files `stsa.binary.{train,dev,test}`.
    With `label_names`, labels are checked (naming the file and line of an unknown one) and encoded as `ClassLabel`.
    """
    path = Path(path)
    file_format = file_format or _infer_format(path)
    records = []  # ("file:line", text, label or None)
    if file_format == "label_first":
        for lineno, line in enumerate(read_lines(path, encoding), start=1):
            parts = line.split(maxsplit=1)
            if len(parts) == 1:
                raise DataError(f"{path}:{lineno}: expected '<label> <sentence>', got {line[:40]!r}")
            where = f"{path}:{lineno}"
            records.append((where, *reversed(parts)) if parts else (where, "", None))  # blank: skipped, counted
    elif file_format in ("tsv", "csv", "jsonl"):
        header, rows = _read_table(path, file_format, encoding)
        if not header:
            raise DataError(f"{path}: empty file")
        text_column = _pick_column(path, header, text_column, TEXT_COLUMNS, "text")
        label_column = _pick_column(path, header, label_column, LABEL_COLUMNS, "label") if labeled else None
        for lineno, row in rows:
            if text_column not in row or (label_column is not None and label_column not in row):
                raise DataError(f"{path}:{lineno}: missing {text_column!r} or {label_column!r}; keys: {list(row)}")
            label = str(row[label_column]).strip() if label_column is not None else None
            records.append((f"{path}:{lineno}", str(row[text_column]), label))
    else:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")
    return _to_dataset(path, records, labeled, label_names)


def read_class_files(
    source: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    label_names: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Reads the one-file-per-class layout: one sentence per line, the class is the file suffix (`rt-polarity.pos`).

    `source` is a folder, a list of files, or a {class: file} mapping. In a folder, the class files are the
    `<name>.<class>` files whose `<name>` is shared by two or more files (so `SOURCE.md` is ignored), or the files
    whose suffix is in `classes`. rt-polarity is Latin-1: pass `encoding="latin-1"`.
    """
    files = _class_files(source, classes)
    records = []
    for label, path in files.items():
        lines = read_lines(path, encoding)
        if not any(line.strip() for line in lines):
            raise DataError(f"{path}: empty file")
        records += [(f"{path}:{lineno}", line, label) for lineno, line in enumerate(lines, start=1)]
    where = Path(source) if isinstance(source, str | Path) else Path(next(iter(files.values()))).parent
    return _to_dataset(where, records, True, label_names)


def _class_files(source, classes: Sequence[str] | None) -> dict[str, Path]:
    if isinstance(source, Mapping):
        return {str(label): Path(path) for label, path in source.items()}
    if not isinstance(source, str | Path):
        return {Path(path).suffix[1:]: Path(path) for path in source}
    folder = Path(source)
    candidates = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix and not p.name.startswith(".")]
    if classes is not None:
        candidates = [p for p in candidates if p.suffix[1:] in classes]
    by_stem: dict[str, list[Path]] = {}
    for path in candidates:
        by_stem.setdefault(path.stem, []).append(path)
    if classes:
        groups = [paths for paths in by_stem.values() if len(paths) == len(classes)]
    else:  # the class files share one stem, e.g. rt-polarity.{pos,neg}; SOURCE.md stands alone
        groups = [paths for paths in by_stem.values() if len(paths) >= 2]
    if len(groups) != 1:
        names = sorted(p.name for p in candidates)
        raise DataError(
            f"{folder}: can't tell which files hold the classes (found {names}); pass classes=['pos', 'neg'] "
            "or the list of class files"
        )
    return {path.suffix[1:]: path for path in groups[0]}


def _to_dataset(path: Path, records: list, labeled: bool, label_names: Sequence[str] | None) -> datasets.Dataset:
    kept = [(where, text.strip(), label) for where, text, label in records if text.strip()]
    if len(kept) < len(records):
        logger.warning("%s: skipped %d empty sentence(s)", path, len(records) - len(kept))
    if not kept:
        raise DataError(f"{path}: empty file (no sentences)")
    texts, labels = [text for _, text, _ in kept], [label for _, _, label in kept]
    if not labeled:
        return datasets.Dataset.from_dict({"text": texts})
    if label_names is None:
        return datasets.Dataset.from_dict({"text": texts, "label": labels})
    known = set(label_names)
    for where, _, label in kept:
        if label not in known:
            raise DataError(
                f"{where}: unknown label {label!r} (known: {list(label_names)}); fix the file or add it to the "
                "label values (--label_values)"
            )
    return _encode(texts, labels, label_names)


def _encode(texts: list[str], labels: list[str], label_names: Sequence[str]) -> datasets.Dataset:
    """A dataset whose string labels (all in `label_names`) become `ClassLabel` ids in the order of `label_names`."""
    label2id = {name: i for i, name in enumerate(label_names)}
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(label_names))}
    )
    return datasets.Dataset.from_dict(
        {"text": texts, "label": [label2id[label] for label in labels]}, features=features
    )


def load_classification_dataset(
    data_files: Mapping[str, str | Path],
    label_names: Sequence[str] | None = None,
    unlabeled_splits: Iterable[str] = (),
    encoding: str = "utf-8",
    **reader_kwargs,
) -> datasets.DatasetDict:
    """Reads splits ({"train": ..., "validation": ..., "test": ...}) into a DatasetDict with a `ClassLabel` label.

    A split path that is a folder uses the one-file-per-class layout (`read_class_files`), a file uses
    `read_classification_file` (`reader_kwargs`: text_column, label_column, file_format). The label names are
    `label_names`, or else the sorted labels of the train split; the other splits are checked against them.
    Splits in `unlabeled_splits` (e.g. GLUE's label-free test.tsv) get only a `text` column.
    """
    unlabeled_splits, splits = set(unlabeled_splits), {}
    for split in sorted(data_files, key=lambda name: name != "train"):  # train first: it defines the labels
        path, labeled = Path(data_files[split]), split not in unlabeled_splits
        if labeled and label_names is None:  # no names given: train's labels define them
            raw = _read_any(path, encoding, labeled, None, reader_kwargs)
            label_names = class_names(raw)
            splits[split] = _encode(raw["text"], raw["label"], label_names)
        else:
            splits[split] = _read_any(path, encoding, labeled, label_names if labeled else None, reader_kwargs)
    return datasets.DatasetDict({split: splits[split] for split in data_files})


def _read_any(path: Path, encoding: str, labeled: bool, names, reader_kwargs: dict) -> datasets.Dataset:
    if path.is_dir():
        return read_class_files(path, classes=reader_kwargs.get("classes"), encoding=encoding, label_names=names)
    kwargs = {key: value for key, value in reader_kwargs.items() if key != "classes"}
    return read_classification_file(path, encoding=encoding, labeled=labeled, label_names=names, **kwargs)


def kfold_splits(
    dataset: datasets.Dataset, k: int = 10, seed: int = 42, stratify: bool = True, label_column: str = "label"
) -> Iterator[datasets.DatasetDict]:
    """Yields k DatasetDicts (train, test) for cross-validation on data without a test split (rt-polarity, 10-fold).

    Deterministic for a seed; every example is in exactly one test fold. With `stratify`, each fold keeps the class
    proportions: examples are shuffled within each class, the classes are laid end to end and dealt round-robin
    into folds, so fold sizes differ by at most one overall and within each class.
    """
    n = len(dataset)
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of examples ({n}), got {k}")
    rng = np.random.default_rng(seed)
    if stratify:
        if label_column not in dataset.column_names:
            raise DataError(f"no {label_column!r} column to stratify on; columns: {dataset.column_names}")
        _, class_ids = np.unique(np.asarray(dataset[label_column]), return_inverse=True)
        order = np.concatenate([rng.permutation(np.flatnonzero(class_ids == c)) for c in range(class_ids.max() + 1)])
    else:
        order = rng.permutation(n)
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % k  # (n,) fold index of each example
    for fold in range(k):
        yield datasets.DatasetDict(
            {
                "train": dataset.select(np.flatnonzero(fold_of != fold)),
                "test": dataset.select(np.flatnonzero(fold_of == fold)),
            }
        )
