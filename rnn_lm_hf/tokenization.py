"""Tokenizers for the recurrent LMs: word level, character level and byte-level BPE.

Each is trained with the `tokenizers` library and wrapped as a `transformers.PreTrainedTokenizerFast`, so it saves with
`save_pretrained` and reloads with `AutoTokenizer.from_pretrained(folder)`. The four special tokens have fixed ids that
match `RNNLMConfig`'s defaults: `<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3. Encoding never adds them (no
post-processor): the data code appends `<eos>` where the corpus convention needs it.

Spacing. The `text-generation` pipeline decodes only the new ids and returns `prompt_text + decoded_new_text`, so a
decoded piece must carry its own leading whitespace:
- `word`: every word decodes with a leading space (like GPT-2's `Ġ`), so `"the cat" + decode([sat, down])` is
  `"the cat sat down"`. The price: `decode(encode(text))` is `" " + " ".join(text.split())` (whitespace runs become one
  space, and there is a leading space, which is also how PTB lines look).
- `char`: space and newline are tokens, so decoding is plain concatenation and round-trips exactly.
- `bpe`: byte-level BPE (GPT-2 style, no prefix space added): round-trips any text exactly, and a word after the first
  starts with its own `Ġ` (space) byte.
`<unk>` is a special token, so `skip_special_tokens=True` (the pipeline default) drops it from decoded text.
"""

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast


PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
# The position is the id; it must agree with RNNLMConfig(pad_token_id=0, bos_token_id=1, eos_token_id=2).
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
PAD_TOKEN_ID, BOS_TOKEN_ID, EOS_TOKEN_ID, UNK_TOKEN_ID = 0, 1, 2, 3
TOKENIZER_KINDS = ("word", "char", "bpe")
DEFAULT_BPE_VOCAB_SIZE = 8000


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "word",
    vocab_size: int | None = None,
    min_frequency: int = 1,
    lowercase: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `texts` and wrap it for transformers (left padding, fixed special ids).

    Args:
        texts (`Iterable[str]`): training text, e.g. the lines of the train split; read once.
        kind (`str`, *optional*, defaults to `"word"`): `"word"` (whitespace-split, for pre-tokenized corpora such
            as PTB/WikiText), `"char"` (one token per character, space and newline included) or `"bpe"` (byte-level
            BPE for raw text).
        vocab_size (`int`, *optional*): the most tokens learned from the data, NOT counting the 4 special tokens, so
            `len(tokenizer) <= vocab_size + 4`. For `word`/`char` the most frequent types are kept and the rest map to
            `<unk>` (None keeps all); for `bpe` it includes the 256 byte symbols (None means 8000).
        min_frequency (`int`, *optional*, defaults to 1): types (or BPE merges) seen fewer times are dropped.
        lowercase (`bool`, *optional*, defaults to `False`): lowercase at training and at encoding time.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"Unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}.")
    if vocab_size is not None and vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int or None, got {vocab_size}.")
    normalizer = normalizers.Lowercase() if lowercase else None
    if kind == "bpe":
        backend = _train_byte_level_bpe(texts, vocab_size or DEFAULT_BPE_VOCAB_SIZE, min_frequency, normalizer)
    else:
        counts = _count_types(texts, kind, normalizer)
        # Literal special strings (PTB's own `<unk>`) are not words: they map to our special ids.
        for token in SPECIAL_TOKENS:
            counts.pop(token, None)
        kept = [t for t, c in counts.most_common(vocab_size) if c >= min_frequency]
        if not kept:
            raise ValueError(
                f"No {kind} types with frequency >= {min_frequency} in the training texts: pass non-empty texts "
                "(the train split's lines) or lower min_frequency."
            )
        backend = _word_level_backend(kept, kind, normalizer)
    return wrap_tokenizer(backend)


def word_tokenizer_from_vocab(words: Iterable[str], lowercase: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a fixed word list (ids 4, 5, ... in order), for tests and built-in corpora."""
    words = [w for w in dict.fromkeys(words) if w not in SPECIAL_TOKENS]
    return wrap_tokenizer(_word_level_backend(words, "word", normalizers.Lowercase() if lowercase else None))


def wrap_tokenizer(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` whose vocabulary starts with `SPECIAL_TOKENS` (ids 0..3)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        # Left padding keeps the last real token at the end of every row for batched generation.
        padding_side="left",
        # transformers' cleanup would glue " ." to the previous word and break the spacing rule above.
        clean_up_tokenization_spaces=False,
    )
    check_special_tokens(tokenizer)
    return tokenizer


def word_tokenizer_lowercases(tokenizer: PreTrainedTokenizerFast, name: str = "the tokenizer") -> bool:
    """Whether a word-level tokenizer of this package (`kind="word"`) lowercases; `ValueError` for any other."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "WordLevel" or (state["pre_tokenizer"] or {}).get("type") != "WhitespaceSplit":
        raise ValueError(
            f"{name} is not a word-level tokenizer (its model is {state['model']['type']}); a vocabulary of words "
            "can be mapped only from a word-level LM (tokenizer_kind word); a BPE or character LM already encodes any "
            "text: use its own tokenizer"
        )
    return (state["normalizer"] or {}).get("type") == "Lowercase"


def load_tokenizer(path: str, **kwargs) -> PreTrainedTokenizerFast:
    """`AutoTokenizer.from_pretrained(path, **kwargs)`, checked to use our special token ids."""
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    check_special_tokens(tokenizer)
    return tokenizer


def check_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    """Raise `ValueError` unless `<pad>`, `<bos>`, `<eos>`, `<unk>` have ids 0, 1, 2, 3 (the model config defaults)."""
    got = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    expected = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    if got != expected:
        raise ValueError(
            f"Tokenizer special token ids {got} differ from the fixed ids {expected} that RNNLMConfig's pad/bos/"
            "eos_token_id defaults assume: build it with rnn_lm_hf.tokenization.train_tokenizer or wrap_tokenizer "
            "(specials first in the vocabulary)."
        )


def _count_types(texts: Iterable[str], kind: str, normalizer: normalizers.Normalizer | None) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        # The backend's own normalizer, so training and encoding lowercase identically.
        text = normalizer.normalize_str(text) if normalizer is not None else text
        counts.update(text.split() if kind == "word" else text)
    return counts


def _word_level_backend(types: list[str], kind: str, normalizer: normalizers.Normalizer | None) -> Tokenizer:
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *types])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    if normalizer is not None:
        backend.normalizer = normalizer
    if kind == "word":
        # Corpora are pre-tokenized: split on whitespace only, never on punctuation.
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        # Prefix every decoded word with a space (see the module docstring on pipeline spacing).
        backend.decoder = decoders.Replace(Regex("^"), " ")
    else:
        # One pre-token per code point, newline included ("." would skip it).
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
    # Registered as special: matched in raw text before splitting (so a literal `<unk>` is ours) and skippable.
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return backend


def _train_byte_level_bpe(
    texts: Iterable[str], vocab_size: int, min_frequency: int, normalizer: normalizers.Normalizer | None
) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    if normalizer is not None:
        backend.normalizer = normalizer
    # No prefix space: the text round-trips exactly, and later words carry their own space byte.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(SPECIAL_TOKENS),
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..3, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no <unk> ever
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return backend


def read_training_lines(files: Iterable[str | Path], encoding: str = "utf-8") -> Iterator[str]:
    """The non-empty lines of text files, checked up front: a missing or undecodable file names itself and the fix."""
    paths = [Path(file) for file in files]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (relative to {Path.cwd()})")
        try:  # decode everything now: an error raised inside the BPE trainer's iteration would lose its message
            path.read_text(encoding=encoding)
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not valid {encoding} ({error.reason}); pass --encoding, e.g. latin-1") from None
    return (line for path in paths for line in path.read_text(encoding=encoding).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """`rnn-lm tokenizer FILE... --output_dir DIR`: train a tokenizer for plain `Trainer` use and save it."""
    parser = argparse.ArgumentParser(
        prog="rnn-lm tokenizer",
        description="Train a word, char or byte-level BPE tokenizer on text files (one sentence or document a line) "
        "and save it; load it with AutoTokenizer.from_pretrained(DIR) and give the model vocab_size=len(tokenizer).",
    )
    parser.add_argument("files", nargs="+", help="Training text files (UTF-8 unless --encoding).")
    parser.add_argument("--output_dir", required=True, help="Folder to save the tokenizer in.")
    parser.add_argument("--kind", choices=TOKENIZER_KINDS, default="word", help="Tokenizer kind (default: word).")
    parser.add_argument("--vocab_size", type=int, help="Most tokens learned, not counting the 4 specials.")
    parser.add_argument("--min_frequency", type=int, default=1, help="Drop rarer types (default: 1).")
    parser.add_argument("--lowercase", action="store_true", help="Lowercase at training and encoding time.")
    parser.add_argument("--encoding", default="utf-8", help="Encoding of the files (default: utf-8).")
    args = parser.parse_args(argv)
    lines = read_training_lines(args.files, args.encoding)
    tokenizer = train_tokenizer(
        lines, kind=args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency, lowercase=args.lowercase
    )
    tokenizer.save_pretrained(args.output_dir)
    print(f"saved a {args.kind} tokenizer of {len(tokenizer)} tokens to {args.output_dir}")
    return 0
