"""Data loading, clear errors, token streams and the two block layouts (every token predicted exactly once)."""

import json

import datasets
import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard, prepare_data_loader
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers import default_data_collator

from rnn_lm_hf.data import (
    IGNORE_INDEX,
    DataError,
    StreamSegments,
    eval_stream_segments,
    group_into_blocks,
    load_text_datasets,
    tokenize_to_stream,
)
from rnn_lm_hf.tokenization import EOS_TOKEN_ID, PAD_TOKEN_ID, train_tokenizer


KEYS = ("input_ids", "attention_mask", "labels", "shift_labels")
LINES = [f"sentence number {i} has {'some ' * (i % 4)}words ." for i in range(40)]


def _stream(length: int) -> np.ndarray:
    # Distinct values so a lost, duplicated or misplaced token cannot go unnoticed.
    return np.arange(100, 100 + length, dtype=np.int64)


def _check_block(example: dict, block_size: int) -> tuple[list[int], list[int]]:
    """Check one block's invariants; return its real (inputs, targets)."""
    for key in KEYS:
        assert example[key].dtype == torch.int64 and example[key].shape == (block_size,)
    real = example["attention_mask"].bool()
    assert torch.equal(real, example["shift_labels"] != IGNORE_INDEX)
    assert torch.equal(example["labels"], torch.where(real, example["input_ids"], IGNORE_INDEX))
    assert (example["input_ids"][~real] == PAD_TOKEN_ID).all()
    # Padding only at the end.
    assert torch.equal(real, torch.arange(block_size) < real.sum())
    return example["input_ids"][real].tolist(), example["shift_labels"][real].tolist()


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


# --- stateless blocks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "block_size"),
    # Blocks longer than the corpus raise: see test_block_size_larger_than_corpus.
    [(n, t) for n in (2, 11, 36, 101) for t in (1, 5, 7, 35) if t <= n - 1],
)
def test_group_into_blocks_predicts_every_token_once(length, block_size):
    stream = _stream(length)
    blocks = group_into_blocks(stream, block_size)
    assert len(blocks) == -(-(length - 1) // block_size)
    inputs, targets = [], []
    for example in blocks:
        block_inputs, block_targets = _check_block(example, block_size)
        inputs += block_inputs
        targets += block_targets
    assert inputs == stream[:-1].tolist() and targets == stream[1:].tolist()


def test_group_into_blocks_overlap_by_one_token():
    blocks = group_into_blocks(list(range(10, 20)), 3)
    assert blocks[0]["input_ids"].tolist() == [10, 11, 12] and blocks[0]["shift_labels"].tolist() == [11, 12, 13]
    assert blocks[1]["input_ids"].tolist() == [13, 14, 15]
    assert blocks[2]["input_ids"].tolist() == [16, 17, 18] and blocks[2]["shift_labels"].tolist() == [17, 18, 19]


# --- stateful truncated-BPTT segments ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [9, 40, 103])
@pytest.mark.parametrize("bptt", [1, 4, 7])
@pytest.mark.parametrize(("batch_size", "num_processes"), [(1, 1), (3, 1), (1, 2), (2, 2), (4, 2)])
def test_stream_segments_predict_every_token_once(length, bptt, batch_size, num_processes):
    stream = _stream(length)
    num_streams = batch_size * num_processes
    segments = StreamSegments(stream, bptt, batch_size, num_processes)
    assert segments.num_streams == num_streams and len(segments) == num_streams * segments.num_segments
    assert max(segments.stream_lengths) - min(segments.stream_lengths) <= 1

    per_stream = {s: [None] * segments.num_segments for s in range(num_streams)}
    for index in range(len(segments)):
        example = segments[index]
        stream_id, segment_id = example["stream_id"].item(), example["segment_id"].item()
        assert (stream_id, segment_id) == segments.locate(index)
        assert per_stream[stream_id][segment_id] is None  # each (stream, segment) exactly once
        per_stream[stream_id][segment_id] = _check_block(example, bptt)

    all_targets = []
    for stream_id, parts in per_stream.items():
        inputs = [token for part in parts for token in part[0]]
        targets = [token for part in parts for token in part[1]]
        assert len(targets) == segments.stream_lengths[stream_id]
        # Continuity across segment boundaries: each input is the previous target.
        assert inputs[1:] == targets[:-1]
        assert inputs[0] == stream[stream.tolist().index(targets[0]) - 1]
        all_targets += targets
    assert all_targets == stream[1:].tolist()


def _sharded_batches(segments: StreamSegments, num_processes: int, process_index: int) -> list[list[int]]:
    sampler = BatchSampler(SequentialSampler(segments), segments.batch_size, drop_last=False)
    shard = BatchSamplerShard(sampler, num_processes=num_processes, process_index=process_index, split_batches=False)
    return list(shard)


@pytest.mark.parametrize("num_processes", [1, 2])
@pytest.mark.parametrize(("length", "batch_size", "bptt"), [(50, 2, 4), (101, 3, 5), (64, 4, 3)])
def test_stream_segments_layout_under_accelerate_sharding(num_processes, length, batch_size, bptt):
    segments = StreamSegments(_stream(length), bptt, batch_size, num_processes)
    seen = []
    for process in range(num_processes):
        batches = _sharded_batches(segments, num_processes, process)
        # Same number of full batches on every process: one per segment.
        assert len(batches) == segments.num_segments and all(len(b) == batch_size for b in batches)
        for segment_id, batch in enumerate(batches):
            for row, index in enumerate(batch):
                assert segments.locate(index) == (process * batch_size + row, segment_id)
            seen += batch
    assert sorted(seen) == list(range(len(segments)))


@pytest.mark.parametrize(
    ("num_processes", "sharding"), [(1, None), (2, "BatchSamplerShard"), (2, "prepare_data_loader")]
)
def test_stream_segments_through_a_dataloader(num_processes, sharding):
    batch_size, bptt = 3, 4
    stream = _stream(90)
    segments = StreamSegments(stream, bptt, batch_size, num_processes)
    for process in range(num_processes):
        loader = DataLoader(segments, batch_size=batch_size, shuffle=False, collate_fn=default_data_collator)
        if sharding == "BatchSamplerShard":
            sampler = BatchSampler(SequentialSampler(segments), batch_size, drop_last=False)
            shard = BatchSamplerShard(sampler, num_processes=num_processes, process_index=process)
            loader = DataLoader(segments, batch_sampler=shard, collate_fn=default_data_collator)
        elif sharding == "prepare_data_loader":  # what accelerate (and so Trainer) does to a sequential loader
            loader = prepare_data_loader(loader, num_processes=num_processes, process_index=process)
        previous_targets = None
        for segment_id, batch in enumerate(loader):
            assert set(batch) == {*KEYS, "stream_id", "segment_id"}
            assert batch["input_ids"].shape == (batch_size, bptt) and batch["input_ids"].dtype == torch.int64
            assert batch["stream_id"].tolist() == [process * batch_size + b for b in range(batch_size)]
            assert batch["segment_id"].tolist() == [segment_id] * batch_size
            if previous_targets is not None:
                # Row b continues row b of the previous batch: its first input is the last target seen there.
                real = batch["attention_mask"][:, 0].bool()
                assert torch.equal(batch["input_ids"][real, 0], previous_targets[real])
            previous_targets = batch["shift_labels"][:, -1]
        assert segment_id + 1 == segments.num_segments


def test_eval_stream_segments_one_stream_per_process():
    stream = _stream(30)
    segments = eval_stream_segments(stream, bptt=4, num_processes=2)
    assert segments.num_streams == 2 and segments.stream_lengths == [15, 14]
    first = [segments[i] for i in range(0, len(segments), 2)]  # process 0: global batches 0, 2, 4, ...
    targets = [t for example in first for t in _check_block(example, 4)[1]]
    assert targets == stream[1:16].tolist()


def test_block_size_larger_than_corpus():
    with pytest.raises(DataError, match="block_size=20 is larger than the validation split") as error:
        group_into_blocks(_stream(10), 20, name="validation split")
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="block_size=20"):
        StreamSegments(_stream(10), 20, per_device_batch_size=1)
    with pytest.raises(DataError, match="parallel streams"):
        StreamSegments(_stream(10), 2, per_device_batch_size=8, num_processes=2)
    with pytest.raises(DataError):
        group_into_blocks([], 1)


# --- token streams ----------------------------------------------------------------------------------------------


def test_tokenize_to_stream_appends_eos_per_line():
    lines = ["the cat sat", "", "the dog"]
    tokenizer = train_tokenizer(lines, kind="word")
    stream = tokenize_to_stream(datasets.Dataset.from_dict({"text": lines}), tokenizer)
    assert stream.dtype == np.int64
    assert tokenizer.convert_ids_to_tokens(stream.tolist()) == [
        "the",
        "cat",
        "sat",
        "<eos>",
        "<eos>",
        "the",
        "dog",
        "<eos>",
    ]
    no_eos = tokenize_to_stream(datasets.Dataset.from_dict({"text": lines}), tokenizer, add_eos=False)
    assert no_eos.tolist() == [t for t in stream.tolist() if t != EOS_TOKEN_ID]


def test_tokenize_to_stream_after_validation_carve_out(tmp_path):
    raw = load_text_datasets(_write(tmp_path / "a.txt", "\n".join(LINES) + "\n"), cache_dir=str(tmp_path / "cache"))
    tokenizer = train_tokenizer(LINES, kind="word")
    stream = tokenize_to_stream(raw["validation"], tokenizer)  # a `select`ed split (indices mapping)
    expected = [tokenizer(t)["input_ids"] + [EOS_TOKEN_ID] for t in list(raw["validation"]["text"])]
    assert stream.tolist() == [t for ids in expected for t in ids]


# --- load_text_datasets -----------------------------------------------------------------------------------------


def test_load_txt_with_validation_file(tmp_path):
    train = _write(tmp_path / "train.txt", "a b c\nd e\n")
    valid = _write(tmp_path / "valid.tokens", " x y \n\n z\n")
    raw = load_text_datasets(train, valid, cache_dir=str(tmp_path / "cache"))
    assert list(raw["train"]["text"]) == ["a b c", "d e"]
    assert list(raw["validation"]["text"]) == [" x y ", "", " z"]  # blank lines kept: each one gets an <eos>
    assert "test" not in raw


def test_load_jsonl_and_csv_with_text_column(tmp_path):
    rows = [{"content": f"line {i}", "id": i} for i in range(20)]
    train = _write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    test = _write(tmp_path / "test.csv", "id,content\n1,hello world\n2,good bye\n")
    raw = load_text_datasets(train, test_file=test, text_column="content", cache_dir=str(tmp_path / "cache"))
    assert list(raw["test"]["content"]) == ["hello world", "good bye"]
    assert len(raw["train"]) + len(raw["validation"]) == 20 and len(raw["validation"]) == 1


def test_validation_carve_out_is_seeded_disjoint_and_ordered(tmp_path):
    train = _write(tmp_path / "train.txt", "\n".join(LINES) + "\n")
    kwargs = {"validation_split_percentage": 10, "cache_dir": str(tmp_path / "cache")}
    raw = load_text_datasets(train, seed=1, **kwargs)
    assert len(raw["validation"]) == 4 and len(raw["train"]) == 36
    assert sorted(list(raw["train"]["text"]) + list(raw["validation"]["text"])) == sorted(LINES)
    for split in ("train", "validation"):  # corpus order kept
        assert list(raw[split]["text"]) == sorted(raw[split]["text"], key=LINES.index)
    assert list(load_text_datasets(train, seed=1, **kwargs)["validation"]["text"]) == list(raw["validation"]["text"])
    assert list(load_text_datasets(train, seed=2, **kwargs)["validation"]["text"]) != list(raw["validation"]["text"])
    assert "validation" not in load_text_datasets(train, validation_split_percentage=0, cache_dir=kwargs["cache_dir"])


def test_keep_linebreaks_and_documents(tmp_path):
    train = _write(tmp_path / "input.txt", "First:\nSpeak.\n")
    lines = load_text_datasets(train, keep_linebreaks=True, validation_split_percentage=0, cache_dir=str(tmp_path))
    assert "".join(list(lines["train"]["text"])) == "First:\nSpeak.\n"
    docs = load_text_datasets(train, train, sample_by="document", cache_dir=str(tmp_path))
    assert list(docs["train"]["text"]) == ["First:\nSpeak.\n"]


def _data_error(**kwargs) -> str:
    with pytest.raises(DataError) as error:
        load_text_datasets(**kwargs)
    message = str(error.value)
    assert "\n" not in message  # one line
    # No chained datasets traceback: raised directly, or re-raised `from None`.
    assert error.value.__cause__ is None and (error.value.__context__ is None or error.value.__suppress_context__)
    return message


def test_error_missing_and_empty_files(tmp_path):
    assert "train_file: no such file" in _data_error(train_file=str(tmp_path / "nope.txt"))
    empty = _write(tmp_path / "empty.txt", "")
    assert f"train_file: {empty} is empty" in _data_error(train_file=empty)
    blank = _write(tmp_path / "blank.txt", "\n  \n\n")
    message = _data_error(train_file=_write(tmp_path / "ok.txt", "a b\n"), validation_file=blank)
    assert f"validation_file: {blank} has no text" in message
    assert "unsupported extension '.parquet'" in _data_error(train_file=_write(tmp_path / "x.parquet", "x"))
    assert "pass train_file" in _data_error()
    assert "not both" in _data_error(train_file=empty, dataset_name="wikitext")


def test_error_missing_text_column(tmp_path):
    jsonl = _write(tmp_path / "a.jsonl", '{"sentence": "x", "label": 1}\n')
    message = _data_error(train_file=jsonl)
    assert f"{jsonl} has no column 'text' (columns: sentence, label)" in message and "text_column" in message
    csv = _write(tmp_path / "a.csv", "a,b\n1,2\n")
    assert "(columns: a, b)" in _data_error(train_file=csv, text_column="content")


def test_error_non_utf8_file(tmp_path):
    bad = _write(tmp_path / "latin1.txt", b"good line\ncaf\xe9 au lait\n")
    message = _data_error(train_file=bad)
    assert bad in message and "not UTF-8" in message and "offset 13" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_error_cannot_carve_validation_from_one_document(tmp_path):
    doc = _write(tmp_path / "doc.txt", "one\ndocument\n")
    assert "pass validation_file" in _data_error(train_file=doc, sample_by="document")


def test_error_hub_dataset_is_wrapped(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    message = _data_error(dataset_name="someone/corpus")
    assert "dataset_name: could not load 'someone/corpus'" in message and "ConnectionError" in message


def test_ptb_stream(shared_data, tmp_path):
    folder = shared_data / "ptb"
    if not folder.is_dir():
        pytest.skip("PTB is not in shared/data")
    files = [str(folder / f"ptb.{split}.txt") for split in ("train", "valid", "test")]
    raw = load_text_datasets(*files, cache_dir=str(tmp_path))
    tokenizer = train_tokenizer(list(raw["train"]["text"]), kind="word", vocab_size=10000)
    # Counts from shared/data/ptb/SOURCE.md: tokens including one <eos> per line.
    expected = {"train": 929589, "validation": 73760, "test": 82430}
    for split, count in expected.items():
        stream = tokenize_to_stream(raw[split], tokenizer)
        assert len(stream) == count
        assert (stream == EOS_TOKEN_ID).sum() == len(raw[split])
    assert len(group_into_blocks(stream, 35)) == -(-(82430 - 1) // 35)
