"""Character-aware tokens (`char_cnn_filters`): a CNN over each token's spelling joins its embedding, the spellings
travel with the weights, and the tagger script builds them from its tokenizer."""

from pathlib import Path

import pytest
import torch
from transformers import pipeline

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForTokenClassification
from rnn_lm_hf.modeling_rnn_lm import RNNLMModel, spelling_table
from rnn_lm_hf.training import train_token_classification


TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>", "Paris", "paris", "works", "in", "1999", "x"]


def spelled_model(model_class=RNNLMModel, **overrides):
    table, characters = spelling_table(TOKENS, 6)
    config = RNNLMConfig(
        vocab_size=len(TOKENS), hidden_size=8, num_hidden_layers=1, char_cnn_filters=5, char_embedding_size=4,
        max_token_chars=6, char_vocab_size=len(characters) + 1, **overrides,
    )  # fmt: skip
    torch.manual_seed(0)
    model = model_class(config).eval()
    model.base_model.set_token_spellings(TOKENS)
    return model, table


def test_spelling_table_pads_and_cuts():
    table, characters = spelling_table(["ab", "abcdefgh", ""], 4)
    assert table.tolist() == [[1, 2, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]]
    assert len(characters) == 8 and 0 not in characters.values()


def test_the_cnn_reads_each_tokens_characters():
    model, table = spelled_model()
    ids = torch.tensor([[4, 5, 8, 9]])  # Paris paris 1999 x
    spelling = model.spelling
    with torch.no_grad():
        features = spelling(ids)[0]
        for position, token in enumerate(ids[0].tolist()):
            chars = table[token][table[token] != 0]
            conv = torch.tanh(spelling.conv(spelling.char_embeddings(table[token]).T.unsqueeze(0)))[0]
            torch.testing.assert_close(features[position], conv[:, : len(chars)].amax(-1))
        embeds = model.embed(ids)
    assert embeds.shape == (1, 4, 8 + 5) and not torch.equal(features[0], features[1])  # case is seen
    torch.testing.assert_close(embeds[..., 8:], features.unsqueeze(0))


def test_spellings_are_saved_and_generation_reads_them(tmp_path):
    model, table = spelled_model(RNNLMForCausalLM)
    model.save_pretrained(tmp_path)
    loaded = RNNLMForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.model.spelling.spellings, table)
    ids = torch.tensor([[1, 4, 6, 7]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    generated = loaded.generate(ids, max_new_tokens=4, do_sample=False)
    again = ids
    for _ in range(4):  # the same greedy tokens without a cache
        again = torch.cat([again, loaded(again, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(generated, again)


def test_bad_spelling_configs_are_refused():
    with pytest.raises(ValueError, match="`char_cnn_filters` must be an int >= 0"):
        RNNLMConfig(char_cnn_filters=-1)
    model, _ = spelled_model()
    with pytest.raises(ValueError, match="do not fit vocab_size=10, char_vocab_size"):
        model.set_token_spellings([*TOKENS[:-1], "ÿþ"])  # two new characters for one
    with pytest.raises(ValueError, match="pass input_ids"):
        model(inputs_embeds=torch.zeros(1, 3, 8))


def test_the_tagger_script_builds_spellings_from_its_tokenizer(tmp_path):
    ner = Path(__file__).resolve().parent / "fixtures" / "ner"
    args = [
        "--train_file", ner / "train.conll", "--validation_file", ner / "dev.conll", "--output_dir", tmp_path,
        "--config_overrides", "hidden_size=16,num_hidden_layers=1,bidirectional=true,char_cnn_filters=8",
        "--tokenizer_kind", "bpe", "--do_train", "--do_eval", "--max_steps", "3", "--use_cpu", "--report_to", "none",
        "--save_strategy", "no",
    ]  # fmt: skip
    train_token_classification.main([str(arg) for arg in args])
    model = RNNLMForTokenClassification.from_pretrained(tmp_path).eval()
    tagger = pipeline("token-classification", model=str(tmp_path), ignore_labels=[])
    tokenizer = tagger.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(list(range(model.config.vocab_size)))
    assert torch.equal(model.model.spelling.spellings, spelling_table(tokens, model.config.max_token_chars)[0])

    # The pipeline's answer, token by token, is the saved tagger's own: its tag, score, token and character span.
    text = "Mary works for Acme"
    encoded = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        probabilities = model(**encoded).logits.softmax(-1)[0]
    scores, label_ids = probabilities.max(-1)
    got = tagger(text)
    ids = encoded.input_ids[0].tolist()
    assert len(ids) > len(text.split())  # the BPE splits words, so token spellings are not the words
    assert [(t["index"], t["word"], t["start"], t["end"], t["entity"]) for t in got] == [
        (i, tokens[token], start, end, model.config.id2label[int(label)])
        for i, (token, (start, end), label) in enumerate(zip(ids, offsets, label_ids))
    ]
    torch.testing.assert_close(torch.tensor([t["score"] for t in got]), scores, rtol=1e-5, atol=1e-6)
    # ... and the spellings are part of it: the same weights with every spelling blanked out score differently.
    model.model.spelling.spellings.zero_()
    with torch.no_grad():
        blanked = model(**encoded).logits.softmax(-1)[0]
    assert not torch.allclose(blanked, probabilities, atol=1e-4)
