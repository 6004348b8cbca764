"""Sentence-classification readers (tsv/csv/jsonl, GLUE, stsa, one file per class), their errors, and k-fold splits."""

import json
import logging
from pathlib import Path

import pytest

from rnn_lm_hf.classification_data import (
    class_names,
    kfold_splits,
    load_classification_dataset,
    read_class_files,
    read_classification_file,
    sort_labels,
)
from rnn_lm_hf.data import DataError


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def _shared(name: str) -> Path:
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"shared/data/{name} is not present")
    return SHARED_DATA / name


@pytest.fixture
def polarity(tmp_path) -> Path:
    """rt-polarity layout: Latin-1 files; byte 0x85 (a cp1252 ellipsis) sits inside a sentence."""
    folder = tmp_path / "polarity"
    folder.mkdir()
    _write(folder, "reviews.pos", "a fine film . \nclever and caf\u00e9-smart\x85 really . \n", "latin-1")
    _write(folder, "reviews.neg", "dull . \n\ntedious . \nbad . \n", "latin-1")
    _write(folder, "SOURCE.md", "# notes\n")
    return folder


# ---- readers ---------------------------------------------------------------------------------------------------


def test_tsv_glue_layout(tmp_path):
    # GLUE: unquoted, literal '"' inside sentences, a trailing space before the tab
    path = _write(tmp_path, "train.tsv", 'sentence\tlabel\nit \'s a "charming" journey . \t1\nbleak \t0\n')
    dataset = read_classification_file(path)
    assert dataset["text"] == ['it \'s a "charming" journey .', "bleak"] and dataset["label"] == ["1", "0"]
    encoded = read_classification_file(path, label_names=["0", "1"])
    assert encoded["label"] == [1, 0] and encoded.features["label"].names == ["0", "1"]
    test = _write(tmp_path, "test.tsv", "index\tsentence\n0\tuneasy mishmash .\n")
    assert read_classification_file(test, labeled=False).column_names == ["text"]


def test_csv_and_jsonl_columns(tmp_path):
    csv_path = _write(tmp_path, "d.csv", 'id,review,stars\n1,"good, very good",5\n2,meh,2\n')
    dataset = read_classification_file(csv_path, text_column="review", label_column="stars")
    assert dataset["text"] == ["good, very good", "meh"] and dataset["label"] == ["5", "2"]
    rows = [{"text": "yes", "label": 1}, {"text": "no", "label": 0}]
    jsonl = _write(tmp_path, "d.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n\n")
    assert read_classification_file(jsonl)["label"] == ["1", "0"]


def test_label_first_stsa_layout(tmp_path, caplog):
    path = _write(tmp_path, "stsa.binary.train", "1 a stirring , funny film\n0 apparently reassembled\n\n")
    with caplog.at_level(logging.WARNING):
        dataset = read_classification_file(path)
    assert dataset["text"] == ["a stirring , funny film", "apparently reassembled"] and dataset["label"] == ["1", "0"]
    assert "skipped 1 empty sentence(s)" in caplog.text


def test_class_files_folder_latin1(polarity):
    dataset = read_class_files(polarity, encoding="latin-1")  # SOURCE.md ignored: its stem is not shared
    assert class_names(dataset) == ["neg", "pos"]
    assert dataset["label"].count("neg") == 3 and dataset["label"].count("pos") == 2  # blank line skipped
    assert "clever and caf\u00e9-smart\x85 really ." in dataset["text"]  # one line, not split at U+0085
    by_mapping = read_class_files(
        {"good": polarity / "reviews.pos", "bad": polarity / "reviews.neg"}, encoding="latin-1"
    )
    assert class_names(by_mapping) == ["bad", "good"]
    by_list = read_class_files([polarity / "reviews.pos"], encoding="latin-1")
    assert set(by_list["label"]) == {"pos"}
    assert set(read_class_files(polarity, classes=["neg"], encoding="latin-1")["label"]) == {"neg"}


def test_load_classification_dataset(tmp_path, polarity):
    train = _write(tmp_path, "train.tsv", "sentence\tlabel\na\t10\nb\t2\nc\t2\n")
    dev = _write(tmp_path, "dev.tsv", "sentence\tlabel\nd\t2\n")
    test = _write(tmp_path, "test.tsv", "index\tsentence\n0\te\n")
    splits = load_classification_dataset({"train": train, "validation": dev, "test": test}, unlabeled_splits=["test"])
    assert splits["train"].features["label"].names == ["2", "10"]  # numeric labels sort as numbers
    assert splits["train"]["label"] == [1, 0, 0] and splits["validation"]["label"] == [0]
    assert splits["test"].column_names == ["text"]
    folder = load_classification_dataset({"train": polarity}, encoding="latin-1")
    assert folder["train"].features["label"].names == ["neg", "pos"]


def test_sort_labels():
    assert sort_labels(["10", "2", "-1"]) == ["-1", "2", "10"]
    assert sort_labels(["pos", "neg", "10"]) == ["10", "neg", "pos"]


# ---- errors ----------------------------------------------------------------------------------------------------


def test_missing_label_column_names_columns_found(tmp_path):
    path = _write(tmp_path, "test.tsv", "index\tsentence\n0\tuneasy mishmash .\n")
    with pytest.raises(DataError, match=r"test\.tsv: no label column .*columns found: \['index', 'sentence'\]"):
        read_classification_file(path)
    with pytest.raises(DataError, match=r"no text column 'review'; columns found"):
        read_classification_file(path, text_column="review", labeled=False)
    jsonl = _write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: missing 'text' or 'label'"):
        read_classification_file(jsonl)


def test_unknown_label_names_file_and_line(tmp_path):
    train = _write(tmp_path, "train.tsv", "sentence\tlabel\na\t0\nb\t1\n")
    dev = _write(tmp_path, "dev.tsv", "sentence\tlabel\nc\t1\nd\t2\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: unknown label '2' \(known: \['0', '1'\]\)"):
        load_classification_dataset({"train": train, "validation": dev})
    with pytest.raises(DataError, match=r"dev\.tsv:3: unknown label '2'"):
        read_classification_file(dev, label_names=["0", "1"])


def test_bad_encoding_names_file_and_fix(polarity):
    with pytest.raises(DataError, match=r"reviews\.(neg|pos):2: not valid utf-8 .*--encoding latin-1"):
        read_class_files(polarity)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("empty.tsv", "", r"empty\.tsv: empty file"),
        ("header_only.tsv", "sentence\tlabel\n", r"header_only\.tsv: empty file \(no sentences\)"),
        ("blank.jsonl", "\n\n", r"blank\.jsonl: empty file"),
        ("stsa.binary.dev", "", r"stsa\.binary\.dev: empty file"),
        ("stsa.binary.test", "1 fine\n0\n", r"stsa\.binary\.test:2: expected '<label> <sentence>'"),
        ("rows.tsv", "sentence\tlabel\na\t1\nb\t0\textra\n", r"rows\.tsv:3: 3 field\(s\), but the header has 2"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": \n', r"bad\.jsonl:2: invalid JSON"),
        ("list.jsonl", "[1, 2]\n", r"list\.jsonl:1: expected a JSON object"),
        ("quote.csv", 'text,label\n"unclosed,1\n', r"quote\.csv:\d+: "),
        ("notes.txt", "1 hello\n", r"notes\.txt: can't tell the layout .*file_format"),
    ],
)
def test_file_errors(tmp_path, name, text, match):
    with pytest.raises(DataError, match=match):
        read_classification_file(_write(tmp_path, name, text))


def test_class_file_errors(tmp_path, polarity):
    _write(polarity, "reviews.neg", "")
    with pytest.raises(DataError, match=r"reviews\.neg: empty file"):
        read_class_files(polarity, encoding="latin-1")
    _write(polarity, "other.a", "x\n")
    _write(polarity, "other.b", "y\n")
    with pytest.raises(DataError, match=r"can't tell which files hold the classes .*classes="):
        read_class_files(polarity, encoding="latin-1")
    assert len(read_class_files(polarity, classes=["a", "b"])) == 2
    with pytest.raises(ValueError, match="file_format must be one of"):
        read_classification_file(polarity / "other.a", file_format="xml")


# ---- k-fold ----------------------------------------------------------------------------------------------------


def _toy(n_pos: int = 23, n_neg: int = 14):
    import datasets

    return datasets.Dataset.from_dict(
        {"text": [f"s{i}" for i in range(n_pos + n_neg)], "label": ["pos"] * n_pos + ["neg"] * n_neg}
    )


@pytest.mark.parametrize("stratify", [True, False])
def test_kfold_partitions_deterministically(stratify):
    dataset = _toy()
    folds = list(kfold_splits(dataset, k=5, seed=3, stratify=stratify))
    assert len(folds) == 5
    tests = [fold["test"]["text"] for fold in folds]
    assert sorted(text for test in tests for text in test) == sorted(dataset["text"])  # each example once
    assert sorted(map(len, tests))[-1] - sorted(map(len, tests))[0] <= 1
    for fold in folds:
        assert not set(fold["train"]["text"]) & set(fold["test"]["text"])
        assert len(fold["train"]) + len(fold["test"]) == len(dataset)
    again = [fold["test"]["text"] for fold in kfold_splits(dataset, k=5, seed=3, stratify=stratify)]
    assert again == tests
    other_seed = [fold["test"]["text"] for fold in kfold_splits(dataset, k=5, seed=4, stratify=stratify)]
    assert other_seed != tests


def test_kfold_stratified_class_counts():
    for fold in kfold_splits(_toy(), k=5):
        labels = fold["test"]["label"]
        assert labels.count("pos") in (4, 5) and labels.count("neg") in (2, 3)  # 23 / 5 and 14 / 5


def test_kfold_errors():
    with pytest.raises(ValueError, match="k must be between 2"):
        next(kfold_splits(_toy(), k=1))
    with pytest.raises(ValueError, match="k must be between 2"):
        next(kfold_splits(_toy(2, 1), k=4))
    with pytest.raises(DataError, match="no 'label' column to stratify on"):
        next(kfold_splits(_toy().remove_columns("label"), k=2))


# ---- real data (skipped when ../shared/data is absent) ---------------------------------------------------------


def test_rt_polarity_real_data():
    folder = _shared("rt-polarity")
    dataset = read_class_files(folder, encoding="latin-1")
    assert dataset["label"].count("pos") == 5331 and dataset["label"].count("neg") == 5331
    with pytest.raises(DataError, match="--encoding latin-1"):
        read_class_files(folder)  # the files are not UTF-8
    sizes = [len(fold["test"]) for fold in kfold_splits(dataset, k=10)]
    assert sum(sizes) == 10662 and set(sizes) <= {1066, 1067}


def test_sst2_real_data():
    folder = _shared("sst2")
    sentence_level = load_classification_dataset(
        {split: folder / "sentence_level" / f"stsa.binary.{split}" for split in ("train", "dev", "test")}
    )
    assert {split: len(data) for split, data in sentence_level.items()} == {"train": 6920, "dev": 872, "test": 1821}
    assert sentence_level["train"].features["label"].names == ["0", "1"]
    glue = load_classification_dataset(
        {"validation": folder / "glue" / "dev.tsv", "test": folder / "glue" / "test.tsv"}, unlabeled_splits=["test"]
    )
    assert len(glue["validation"]) == 872 and glue["validation"]["label"].count(1) == 444
    assert len(glue["test"]) == 1821 and glue["test"].column_names == ["text"]
