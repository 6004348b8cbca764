"""Tokenizers: special ids, save/load, round trips and the pipeline spacing rule, for the word, char and bpe kinds."""

import pytest
from transformers import AutoTokenizer

from rnn_lm_hf.tokenization import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    PAD_TOKEN_ID,
    SPECIAL_TOKENS,
    UNK_TOKEN_ID,
    check_special_tokens,
    load_tokenizer,
    train_tokenizer,
    word_tokenizer_from_vocab,
)


WORD_TEXTS = [
    "the cat sat down on the mat .",
    "the dog sat on the <unk> mat .",
    "a cat and a dog ran away .",
    "the writer of the books is here .",
]
RAW_TEXTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "All:\nSpeak, speak.\n",
    "Caf\u00e9s, na\u00efve r\u00e9sum\u00e9s and tabs\tinside.\n",
] * 5
KINDS = ["word", "char", "bpe"]


def _train(kind: str):
    return train_tokenizer(WORD_TEXTS if kind == "word" else RAW_TEXTS, kind=kind)


def _pipeline_text(tokenizer, prompt: str, new_ids: list[int]) -> str:
    # What transformers' text-generation pipeline returns: the prompt plus the decoded NEW ids only.
    return prompt + tokenizer.decode(new_ids, skip_special_tokens=True)


@pytest.mark.parametrize("kind", KINDS)
def test_special_token_ids_and_padding_side(kind):
    tokenizer = _train(kind)
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert ids == (PAD_TOKEN_ID, BOS_TOKEN_ID, EOS_TOKEN_ID, UNK_TOKEN_ID)
    assert tokenizer.padding_side == "left"
    # No bos/eos added by default.
    ids = tokenizer("the cat")["input_ids"]
    assert BOS_TOKEN_ID not in ids and EOS_TOKEN_ID not in ids


def test_special_ids_match_the_model_config_defaults():
    try:
        from rnn_lm_hf import RNNLMConfig
    except ImportError as error:  # the model package is written in parallel
        pytest.skip(f"RNNLMConfig not importable: {error}")
    config = RNNLMConfig()
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (
        PAD_TOKEN_ID,
        BOS_TOKEN_ID,
        EOS_TOKEN_ID,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reload(kind, tmp_path):
    tokenizer = _train(kind)
    tokenizer.save_pretrained(tmp_path)
    for reloaded in (AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(str(tmp_path))):
        assert reloaded.get_vocab() == tokenizer.get_vocab()
        assert reloaded.padding_side == "left"
        text = WORD_TEXTS[0] if kind == "word" else RAW_TEXTS[0]
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert reloaded.decode(tokenizer(text)["input_ids"]) == tokenizer.decode(tokenizer(text)["input_ids"])


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_is_exact(kind):
    tokenizer = _train(kind)
    for text in RAW_TEXTS[:3]:
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_word_round_trip_normalises_whitespace():
    tokenizer = _train("word")
    text = "the  cat sat\ton the mat ."
    # Documented: every word decodes with its leading space, whitespace runs become one space.
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == " " + " ".join(text.split())


@pytest.mark.parametrize(
    ("kind", "prompt", "continuation"),
    [
        ("word", "the cat", " sat down"),
        ("word", "the", " dog ran away ."),
        ("char", "Speak", ", speak.\nAll:"),
        ("char", "hear me", " speak"),
        ("bpe", "Before we proceed", " any further, hear me"),
        ("bpe", "First Citizen:", "\nBefore we"),
    ],
)
def test_prompt_plus_new_tokens_is_spaced_right(kind, prompt, continuation):
    tokenizer = _train(kind)
    full_ids = tokenizer(prompt + continuation)["input_ids"]
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert _pipeline_text(tokenizer, prompt, full_ids[len(prompt_ids) :]) == prompt + continuation


def test_text_generation_pipeline_spacing_with_the_real_model():
    """End to end through transformers' pipeline, if the package's model is importable."""
    try:
        from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM
    except ImportError as error:
        pytest.skip(f"model not importable: {error}")
    from transformers import pipeline

    tokenizer = _train("word")
    model = RNNLMForCausalLM(RNNLMConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1)).eval()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompt = "the cat"
    output = generator(prompt, max_new_tokens=4, do_sample=False)[0]["generated_text"]
    # Greedy from a random model: whatever the words, each one is separated by exactly one space.
    assert output.startswith(prompt + " ") or output == prompt
    assert output == " ".join(output.split())


def test_word_vocab_cap_and_unknown_words():
    texts = ["a a a a b b b c c d", "<unk> <unk> e"]
    tokenizer = train_tokenizer(texts, kind="word", vocab_size=3)
    assert len(tokenizer) == 3 + len(SPECIAL_TOKENS)
    # Most frequent kept; the literal `<unk>` is our special token, never a word of its own.
    assert {w for w in tokenizer.get_vocab() if w not in SPECIAL_TOKENS} == {"a", "b", "c"}
    ids = tokenizer("a d <unk> zebra c")["input_ids"]
    assert ids == [tokenizer.convert_tokens_to_ids("a"), UNK_TOKEN_ID, UNK_TOKEN_ID, UNK_TOKEN_ID, ids[-1]]
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == "c"


def test_word_min_frequency_and_lowercase():
    tokenizer = train_tokenizer(["The the THE cat", "dog"], kind="word", min_frequency=2, lowercase=True)
    assert {w for w in tokenizer.get_vocab() if w not in SPECIAL_TOKENS} == {"the"}
    assert tokenizer("The CAT")["input_ids"] == [tokenizer.convert_tokens_to_ids("the"), UNK_TOKEN_ID]


def test_char_tokens_include_space_and_newline():
    tokenizer = train_tokenizer(["ab a\n"], kind="char")
    assert set(tokenizer.get_vocab()) == {*SPECIAL_TOKENS, "a", "b", " ", "\n"}
    ids = tokenizer("ba \nz")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["b", "a", " ", "\n", "<unk>"]


def test_bpe_vocab_size_counts_learned_tokens_only():
    tokenizer = train_tokenizer(RAW_TEXTS * 20, kind="bpe", vocab_size=280)
    assert 256 + len(SPECIAL_TOKENS) < len(tokenizer) <= 280 + len(SPECIAL_TOKENS)
    # Byte-level: any text round-trips, even characters never seen in training.
    text = "Unseen: \u4f60\u597d \U0001f600\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_word_tokenizer_from_vocab():
    tokenizer = word_tokenizer_from_vocab(["the", "cat", "<unk>", "the"])
    assert tokenizer.convert_tokens_to_ids(["the", "cat"]) == [4, 5] and len(tokenizer) == 6


def test_invalid_arguments():
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(["a"], kind="sentencepiece")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a"], kind="word", vocab_size=0)
    with pytest.raises(ValueError, match="No word types"):
        train_tokenizer(["a"], kind="word", min_frequency=2)


def test_ptb_word_vocabulary(shared_data):
    path = shared_data / "ptb" / "ptb.train.txt"
    if not path.is_file():
        pytest.skip("PTB is not in shared/data")
    lines = path.read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer(lines, kind="word", vocab_size=10000)
    # PTB's 10k types are 9,998 words + `<unk>` + `<eos>`; we add `<pad>` and `<bos>`: 10,002.
    assert len(tokenizer) == 10002
    ids = tokenizer(lines)["input_ids"]
    assert sum(len(x) for x in ids) == 887521
    literal_unks = sum(line.split().count("<unk>") for line in lines)
    assert literal_unks == 45020
    assert sum(x.count(UNK_TOKEN_ID) for x in ids) == literal_unks


@pytest.mark.parametrize("kind", KINDS)
def test_tokenizer_command_trains_and_saves_a_tokenizer(tmp_path, capsys, kind):
    """`rnn-lm tokenizer`: the tokenizer for users of plain `Trainer`, loadable with AutoTokenizer."""
    from rnn_lm_hf.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(WORD_TEXTS) + "\n\n")
    out = tmp_path / "tok"
    assert main(["tokenizer", str(corpus), "--kind", kind, "--output_dir", str(out)]) == 0
    assert f"saved a {kind} tokenizer" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(out)
    check_special_tokens(tokenizer)
    assert tokenizer.padding_side == "left" and tokenizer.unk_token_id not in tokenizer(WORD_TEXTS[0]).input_ids
