"""Corpus loading (`datasets`) and language-model block preparation for the recurrent LMs.

A split becomes ONE token stream: each line (or document) is tokenized, `<eos>` is appended after every line when
`add_eos=True` (the PTB/WikiText convention: the newline is a token) and everything is concatenated.

Block contract (what the trainer and the model's loss rely on). Every token of the stream except the first, which is
context only, is predicted exactly once, so blocks overlap by one token. A block of length T starting at i has
- `input_ids`      = stream[i : i+T]
- `shift_labels`   = stream[i+1 : i+T+1], the next tokens, used by the loss as-is (no shifting);
- `labels`         = a copy of `input_ids` (Trainer needs a `labels` key; the loss ignores it when `shift_labels` is
  there, and Trainer counts `num_items_in_batch` from `shift_labels`);
- `attention_mask` = 1 on real positions.
Padding is always at the END of a block: `input_ids`=pad id, `attention_mask`=0, `labels`=`shift_labels`=-100, so
`attention_mask == (shift_labels != -100)`. All four are int64 of length T. Trainer drops columns that the model's
`forward` does not name, so keep `shift_labels` (and `stream_id`/`segment_id`) with `remove_unused_columns=False`
unless `forward` lists them.

Two layouts:
- `group_into_blocks`: consecutive non-overlapping blocks (the last one padded), to be shuffled by the Trainer.
- `StreamSegments`: truncated BPTT with a carried hidden state (Zaremba et al. 2014; pytorch/examples
  word_language_model `batchify`), laid out for a SEQUENTIAL sampler sharded by accelerate (see the class).
"""

import codecs
import math
import os
from collections.abc import Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import PreTrainedTokenizerBase

from .modeling_rnn_lm import IGNORE_INDEX
from .tokenization import PAD_TOKEN_ID


# Local file extension -> `datasets` packaged builder.
FILE_BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".tokens": "text",  # WikiText
    ".raw": "text",  # WikiText raw
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
}
SAMPLE_BY = ("line", "paragraph", "document")


class DataError(ValueError):
    """A data problem the user can fix (bad file, missing column, block too large); the message says how."""


def load_text_datasets(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    text_column: str = "text",
    validation_split_percentage: int = 5,
    seed: int = 42,
    sample_by: str = "line",
    keep_linebreaks: bool = False,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Load local text files or a Hub dataset into a `DatasetDict` with `train` and `validation` (and maybe `test`).

    Args:
        train_file / validation_file / test_file (`str`, *optional*): `.txt`/`.text`/`.tokens`/`.raw` (one example per
            line, or per file with `sample_by="document"`), or `.json`/`.jsonl`/`.csv` with a `text_column`. Each split
            may use its own format.
        dataset_name / dataset_config_name (`str`, *optional*): a Hub dataset instead of files (same `load_dataset`
            path).
        text_column (`str`, *optional*, defaults to `"text"`): the column holding the text (the text loader names it
            `text`).
        validation_split_percentage (`int`, *optional*, defaults to 5): with no validation split, this share of the
            train examples becomes `validation` (0: none).
        seed (`int`, *optional*, defaults to 42): which train examples are held out. Both splits keep corpus order.
            Want a contiguous held-out stream? Pass `validation_file`.
        sample_by (`str`, *optional*, defaults to `"line"`): `"line"`, `"paragraph"` or `"document"`, for text files.
        keep_linebreaks (`bool`, *optional*, defaults to `False`): keep each line's `\\n` in text files, e.g. for a
            char LM on Tiny Shakespeare (`add_eos=False` then, since the newline is already a character).
        cache_dir (`str`, *optional*): `datasets` cache folder.

    Raises:
        DataError: a one-line message naming the file or option and the fix.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    if dataset_name is not None and any(files.values()):
        raise DataError("Pass either dataset_name or train_file/validation_file/test_file, not both.")
    if dataset_name is None and train_file is None:
        raise DataError("No training data: pass train_file (a .txt/.tokens/.raw/.json/.jsonl/.csv) or dataset_name.")
    if sample_by not in SAMPLE_BY:
        raise DataError(f"sample_by={sample_by!r} is not one of {SAMPLE_BY}.")
    if not 0 <= validation_split_percentage < 100:
        raise DataError(f"validation_split_percentage={validation_split_percentage} must be in [0, 100).")

    text_options = {"sample_by": sample_by, "keep_linebreaks": keep_linebreaks}
    if dataset_name is not None:
        raw = _load_hub_dataset(dataset_name, dataset_config_name, cache_dir)
    else:
        raw = datasets.DatasetDict(
            {
                split: _load_file(path, f"{split}_file", text_column, text_options, cache_dir)
                for split, path in files.items()
                if path is not None
            }
        )
    if "train" not in raw:
        raise DataError(f"Dataset {dataset_name!r} has no 'train' split (splits: {', '.join(raw)}).")
    for split, dataset in raw.items():
        _check_has_text(
            dataset, text_column, f"{split}_file: {files[split]}" if files.get(split) else f"split {split!r}"
        )
    if "validation" not in raw and validation_split_percentage > 0:
        raw["train"], raw["validation"] = _carve_validation(raw["train"], validation_split_percentage, seed)
    return raw


def tokenize_to_stream(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str = "text",
    add_eos: bool = True,
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> np.ndarray:
    """Tokenize every example of a split (no special tokens), append `<eos>` after each if `add_eos`, concatenate.

    Returns a 1-D int64 array. Uses `Dataset.map(batched=True)`, so results are cached next to file-backed datasets.
    """
    if text_column not in dataset.column_names:
        raise DataError(f"No column {text_column!r} (columns: {', '.join(dataset.column_names)}); set text_column.")
    eos = [tokenizer.eos_token_id]

    def encode(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch[text_column], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"input_ids": [x + eos for x in ids] if add_eos else ids}

    tokenized = dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )
    # Flatten the Arrow list column directly: no Python list per example.
    return pc.list_flatten(tokenized.with_format("arrow")["input_ids"]).to_numpy().astype(np.int64)


def group_into_blocks(
    stream: Sequence[int] | np.ndarray | torch.Tensor,
    block_size: int,
    pad_token_id: int = PAD_TOKEN_ID,
    name: str = "corpus",
) -> datasets.Dataset:
    """Stateless layout: consecutive non-overlapping blocks of `block_size` predictions (last one padded, not dropped).

    Returns a `datasets.Dataset` (torch format) with `input_ids`, `attention_mask`, `labels`, `shift_labels`.
    """
    tokens = _as_stream(stream, block_size, name, num_streams=1)
    num_targets = len(tokens) - 1
    num_blocks = math.ceil(num_targets / block_size)
    # Inputs are stream[:-1] and targets stream[1:], padded to a whole number of blocks and reshaped.
    input_ids = np.full(num_blocks * block_size, pad_token_id, dtype=np.int64)
    shift_labels = np.full(num_blocks * block_size, IGNORE_INDEX, dtype=np.int64)
    input_ids[:num_targets], shift_labels[:num_targets] = tokens[:-1], tokens[1:]
    columns = _block_columns(input_ids, shift_labels)
    # Build the Arrow list columns from the flat arrays directly (from_dict would make a Python list per block).
    offsets = pa.array(np.arange(0, num_blocks * block_size + 1, block_size, dtype=np.int32))
    table = pa.table({key: pa.ListArray.from_arrays(offsets, value) for key, value in columns.items()})
    return datasets.Dataset(table).with_format("torch")


class StreamSegments(torch.utils.data.Dataset):
    """Stateful truncated-BPTT layout: S parallel streams cut into consecutive `bptt`-long segments.

    The stream's predictions are split into S = `per_device_batch_size` * `num_processes` contiguous streams of
    nearly equal length (the first `remainder` streams get one more token; nothing is dropped). Stream s carries its
    own one-token overlap, so the split's predictions are each made exactly once. Every stream is cut into
    `num_segments` segments; the shorter ones are padded at the end (a last segment may be all padding).

    Flat index order, for a plain SEQUENTIAL sampler with batch size B = `per_device_batch_size`, sharded by
    accelerate's `BatchSamplerShard` (split_batches=False: process p gets global batches p, p+P, p+2P, ...):
    index i -> global batch g = i // B, row b = i % B, process p = g % P, segment k = g // P, stream s = p*B + b.
    So on process p, row b of every batch is stream p*B + b, and consecutive batches are consecutive segments; every
    process gets exactly `num_segments` full batches. Use `default_data_collator` (no shuffling, no label rebuild).

    Each example also has `stream_id` and `segment_id` (int64 scalars): the trainer resets the carried state where
    `segment_id == 0` and MUST pop both keys before calling the model.

    With `variable_bptt`, segment k of every stream has its own length, drawn anew each epoch (`set_epoch`) as in
    AWD-LSTM (Merity et al. 2018, 4.1): `bptt` with probability 0.95, else `bptt / 2`, plus N(0, 5) noise, at least 5.
    The lengths are rescaled to tile the streams exactly, so the number of segments per epoch stays fixed and every
    token is still predicted exactly once; the windows' cut points move from epoch to epoch.
    """

    def __init__(
        self,
        stream: Sequence[int] | np.ndarray | torch.Tensor,
        bptt: int,
        per_device_batch_size: int,
        num_processes: int = 1,
        pad_token_id: int = PAD_TOKEN_ID,
        name: str = "corpus",
        variable_bptt: bool = False,
        seed: int = 0,
    ):
        if per_device_batch_size < 1 or num_processes < 1:
            raise ValueError(f"per_device_batch_size={per_device_batch_size} and num_processes must be >= 1.")
        self.bptt, self.batch_size, self.num_processes = bptt, per_device_batch_size, num_processes
        self.num_streams = per_device_batch_size * num_processes
        tokens = _as_stream(stream, bptt, name, num_streams=self.num_streams)
        self.num_tokens = len(tokens) - 1  # predictions
        base, remainder = divmod(self.num_tokens, self.num_streams)
        self.stream_lengths = [base + (s < remainder) for s in range(self.num_streams)]
        self.num_segments = math.ceil(max(self.stream_lengths) / bptt)

        # (num_streams, num_segments * bptt) inputs and targets; stream s predicts stream[start : start + length].
        width = self.num_segments * bptt
        input_ids = np.full((self.num_streams, width), pad_token_id, dtype=np.int64)
        shift_labels = np.full((self.num_streams, width), IGNORE_INDEX, dtype=np.int64)
        start = 1
        for s, length in enumerate(self.stream_lengths):
            input_ids[s, :length] = tokens[start - 1 : start - 1 + length]
            shift_labels[s, :length] = tokens[start : start + length]
            start += length
        # (num_streams, width) each; segment k of every stream is columns bounds[k]:bounds[k + 1].
        self._columns = {
            key: torch.from_numpy(value) for key, value in _block_columns(input_ids, shift_labels).items()
        }
        self.variable_bptt, self.seed = variable_bptt, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the segment lengths of `epoch` (fixed `bptt` windows unless `variable_bptt`)."""
        width = self.num_segments * self.bptt
        if not self.variable_bptt:
            self.bounds = np.arange(0, width + 1, self.bptt)
            return
        rng = np.random.default_rng([self.seed, epoch])
        base = np.where(rng.random(self.num_segments) < 0.95, self.bptt, self.bptt / 2)
        lengths = np.maximum(min(5, self.bptt), rng.normal(base, 5))
        cuts = np.round(np.cumsum(lengths) / lengths.sum() * width).astype(np.int64)
        # Rounding never merges two cuts: every window keeps at least one position.
        cuts = np.maximum(cuts, np.arange(1, self.num_segments + 1))
        cuts = np.minimum(cuts, width - np.arange(self.num_segments - 1, -1, -1))
        self.bounds = np.concatenate([[0], cuts])

    def __len__(self) -> int:
        return self.num_streams * self.num_segments

    def segment(self, k: int) -> dict[str, torch.Tensor]:
        """Segment `k` of every stream at once, (num_streams, length) per column: a bare training loop's batch."""
        return {key: value[:, self.bounds[k] : self.bounds[k + 1]] for key, value in self._columns.items()}

    def locate(self, index: int) -> tuple[int, int]:
        """(stream_id, segment_id) of flat `index`, following the layout in the class docstring."""
        global_batch, row = divmod(index, self.batch_size)
        segment, process = divmod(global_batch, self.num_processes)
        return process * self.batch_size + row, segment

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} segments")
        stream_id, segment_id = self.locate(index)
        start, end = self.bounds[segment_id], self.bounds[segment_id + 1]
        example = {key: value[stream_id, start:end] for key, value in self._columns.items()}
        example["stream_id"] = torch.tensor(stream_id)
        example["segment_id"] = torch.tensor(segment_id)
        return example


def eval_stream_segments(
    stream: Sequence[int] | np.ndarray | torch.Tensor,
    bptt: int,
    num_processes: int = 1,
    per_device_batch_size: int = 1,
    pad_token_id: int = PAD_TOKEN_ID,
    name: str = "evaluation split",
) -> StreamSegments:
    """Evaluation layout: by default ONE stream per process (eval batch size 1), so each token is scored with the
    whole preceding part of its stream as context; only the P-1 stream starts lose context. A larger batch size is
    faster but resets the state at S = per_device_batch_size * P places."""
    return StreamSegments(stream, bptt, per_device_batch_size, num_processes, pad_token_id, name)


def _block_columns(input_ids: np.ndarray, shift_labels: np.ndarray) -> dict[str, np.ndarray]:
    real = shift_labels != IGNORE_INDEX
    return {
        "input_ids": input_ids,
        "attention_mask": real.astype(np.int64),
        "labels": np.where(real, input_ids, IGNORE_INDEX),
        "shift_labels": shift_labels,
    }


def _as_stream(stream, block_size: int, name: str, num_streams: int) -> np.ndarray:
    tokens = np.asarray(stream, dtype=np.int64)
    if tokens.ndim != 1:
        raise ValueError(f"The {name} token stream must be 1-D, got shape {tokens.shape}.")
    if block_size < 1:
        raise DataError(f"block_size must be >= 1, got {block_size}.")
    num_targets = len(tokens) - 1
    if num_targets < block_size:
        raise DataError(
            f"block_size={block_size} is larger than the {name} ({max(num_targets, 0)} tokens to predict); "
            f"lower block_size to at most {max(num_targets, 1)} or use more data."
        )
    if num_targets < num_streams:
        raise DataError(
            f"The {name} has {num_targets} tokens to predict, fewer than its {num_streams} parallel streams; "
            "lower the per-device batch size or use more data."
        )
    return tokens


def _load_file(path: str, option: str, text_column: str, text_options: dict, cache_dir: str | None):
    if not os.path.isfile(path):
        raise DataError(f"{option}: no such file {path!r}; check the path.")
    extension = os.path.splitext(path)[1].lower()
    builder = FILE_BUILDERS.get(extension)
    if builder is None:
        raise DataError(
            f"{option}: {path} has an unsupported extension {extension!r}; use one of {sorted(FILE_BUILDERS)}."
        )
    if os.path.getsize(path) == 0:
        raise DataError(f"{option}: {path} is empty; point it at a file with text.")
    options = text_options if builder == "text" else {}
    try:
        dataset = datasets.load_dataset(
            builder, data_files={"train": path}, split="train", cache_dir=cache_dir, **options
        )
    except Exception as error:  # datasets wraps everything in deep tracebacks: re-raise one actionable line
        raise _explain_load_error(error, path, option, builder) from None
    if text_column not in dataset.column_names:
        raise DataError(
            f"{option}: {path} has no column {text_column!r} (columns: {', '.join(dataset.column_names)}); "
            "set text_column to one of them."
        )
    return dataset


def _load_hub_dataset(name: str, config_name: str | None, cache_dir: str | None) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(name, config_name, cache_dir=cache_dir)
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(
            f"dataset_name: could not load {name!r} (config {config_name!r}): {type(error).__name__}: {message} "
            "(offline? pass local files with train_file instead)."
        ) from None


def _explain_load_error(error: Exception, path: str, option: str, builder: str) -> DataError:
    offset = _first_invalid_utf8_offset(path)
    if offset is not None:
        with open(path, "rb") as handle:
            handle.seek(offset)
            bad = handle.read(4)
        return DataError(
            f"{option}: {path} is not UTF-8 (invalid byte at offset {offset}: {bad!r}); re-encode it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path} > fixed{os.path.splitext(path)[1]}"
        )
    while error.__cause__ is not None:  # the root cause says more than DatasetGenerationError
        error = error.__cause__
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return DataError(f"{option}: could not read {path} as {builder}: {type(error).__name__}: {message}")


def _first_invalid_utf8_offset(path: str, chunk_size: int = 1 << 20) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence in `path`, or None if the file is valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read so far
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            pending = len(decoder.getstate()[0])  # an incomplete sequence carried over from the previous chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                return offset - pending + error.start
            if not chunk:
                return None
            offset += len(chunk)


def _check_has_text(dataset: datasets.Dataset, text_column: str, where: str) -> None:
    if text_column not in dataset.column_names:
        raise DataError(
            f"{where} has no column {text_column!r} (columns: {', '.join(dataset.column_names)}); "
            "set text_column to one of them."
        )
    for batch in dataset.select_columns([text_column]).iter(batch_size=1000):
        if any(isinstance(text, str) and text.strip() for text in batch[text_column]):
            return
    raise DataError(f"{where} has no text (no examples, or only blank ones); point it at a file with text.")


def _carve_validation(
    train: datasets.Dataset, percentage: int, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    num_validation = max(1, round(len(train) * percentage / 100))
    if num_validation >= len(train):
        raise DataError(
            f"Cannot hold out {percentage}% of {len(train)} train example(s) for validation; pass validation_file, "
            "or use sample_by='line' so a file gives more than one example."
        )
    held_out = np.random.default_rng(seed).permutation(len(train))[:num_validation]
    is_validation = np.zeros(len(train), dtype=bool)
    is_validation[held_out] = True
    # Sorted indices: both splits keep the corpus order.
    return train.select(np.flatnonzero(~is_validation)), train.select(np.flatnonzero(is_validation))
