"""The bidirectional LM (`bidirectional=True, separate_directions=True`, ELMo's biLM): neither direction sees the
other's context at any layer, the loss is the mean of both directions, its weights load exactly into the tagging and
classification heads, the training script reports a perplexity per direction; and ELMo's layer mix in the heads."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification
from rnn_lm_hf.modeling_rnn_lm import PaddingPacker, RNNLMModel
from rnn_lm_hf.training import train_clm
from tests import test_train_clm
from tests.test_train_clm import tiny_run_args


PADDINGS = {
    "none": torch.ones(2, 8, dtype=torch.long),
    "right": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
    "left": torch.tensor([[1] * 8, [0] * 3 + [1] * 5]),
}


corpus = test_train_clm.corpus  # the same fixture: a small generated corpus


def bilm_config(cell_type: str = "lstm", **overrides) -> RNNLMConfig:
    fields = {"vocab_size": 30, "hidden_size": 6, "embedding_size": 5, "num_hidden_layers": 3, "cell_type": cell_type}
    return RNNLMConfig(**{**fields, "bidirectional": True, "separate_directions": True, **overrides})


def layer_outputs(model: RNNLMModel, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:])


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_neither_direction_sees_the_others_context_at_any_layer(cell_type, padding):
    torch.manual_seed(0)
    mask = PADDINGS[padding]
    ids = torch.randint(3, 30, (2, 8))
    model = RNNLMModel(bilm_config(cell_type)).eval()
    before = layer_outputs(model, ids, mask)
    for row in range(2):
        real = mask[row].nonzero().flatten().tolist()
        k = real[len(real) // 2]  # change one real token in the middle of this row
        changed = ids.clone()
        changed[row, k] = 3 + (ids[row, k] - 2) % 27
        after = layer_outputs(model, changed, mask)
        for layer, (old, new) in enumerate(zip(before, after)):
            forward_old, backward_old = old[row].split(6, -1)
            forward_new, backward_new = new[row].split(6, -1)
            earlier, later = [t for t in real if t < k], [t for t in real if t > k]
            assert torch.equal(forward_old[earlier], forward_new[earlier]), (layer, "forward saw the right")
            assert torch.equal(backward_old[later], backward_new[later]), (layer, "backward saw the left")
            assert not torch.equal(forward_old[k], forward_new[k]) and not torch.equal(
                backward_old[k], backward_new[k]
            )
            assert torch.equal(old[1 - row], new[1 - row])  # the other row is untouched


def test_a_joint_bidirectional_stack_would_leak():
    """The same probe on a joint BiLSTM stack: from layer 2 on, the backward half has read the left context."""
    torch.manual_seed(0)
    ids, mask = torch.randint(3, 30, (1, 8)), torch.ones(1, 8, dtype=torch.long)
    model = RNNLMModel(bilm_config(separate_directions=False)).eval()
    changed = ids.clone()
    changed[0, 3] = 3 + (ids[0, 3] - 2) % 27
    backward_old = layer_outputs(model, ids, mask)[1][0, 4:, 6:]
    backward_new = layer_outputs(model, changed, mask)[1][0, 4:, 6:]
    assert not torch.equal(backward_old, backward_new)


@pytest.mark.parametrize("padding", PADDINGS)
def test_reversal_index_reverses_real_tokens_in_place(padding):
    mask = PADDINGS[padding]
    x = torch.arange(16).view(2, 8)
    index = PaddingPacker(mask).reversal_index()
    reversed_ = x.gather(1, index)
    for row in range(2):
        real = mask[row].bool()
        assert reversed_[row, real].tolist() == x[row, real].flip(0).tolist()
        assert reversed_[row, ~real].tolist() == x[row, ~real].tolist()
    assert torch.equal(reversed_.gather(1, index), x)


def test_loss_is_the_mean_of_both_directions_and_logits_read_each_direction():
    torch.manual_seed(0)
    model = RNNLMForCausalLM(bilm_config()).eval()
    ids, mask = torch.randint(3, 30, (2, 8)), PADDINGS["right"]
    labels = ids.masked_fill(mask == 0, -100)
    output = model(input_ids=ids, attention_mask=mask, labels=labels)
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    forward, backward = hidden.split(6, -1)
    torch.testing.assert_close(output.logits, model.lm_head(model.projection(forward)))
    torch.testing.assert_close(output.logits_backward, model.lm_head(model.projection(backward)))
    ce = torch.nn.functional.cross_entropy
    expected_forward = ce(output.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    expected_backward = ce(output.logits_backward[:, 1:].flatten(0, 1), labels[:, :-1].flatten(), ignore_index=-100)
    torch.testing.assert_close(output.loss_forward, expected_forward)
    torch.testing.assert_close(output.loss_backward, expected_backward)
    torch.testing.assert_close(output.loss, (expected_forward + expected_backward) / 2)
    with pytest.raises(ValueError, match="bidirectional LM cannot generate"):
        model.generate(ids[:1], max_new_tokens=2)


@pytest.mark.parametrize("head", [RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_bilm_weights_load_exactly_into_both_heads(tmp_path, head):
    torch.manual_seed(0)
    lm = RNNLMForCausalLM(bilm_config())
    lm.save_pretrained(tmp_path)
    model, info = head.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    encoder = dict(model.model.named_parameters())
    assert any(name.startswith("reverse_layers.") for name in encoder)
    for name, param in lm.model.named_parameters():
        assert torch.equal(encoder[name], param), name
    assert not [key for key in info["missing_keys"] if key.startswith("model.")]
    ids = torch.randint(3, 30, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model.model.eval()(ids).last_hidden_state, lm.model.eval()(ids).last_hidden_state)


@pytest.mark.parametrize("head", [RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_layer_mix_is_a_learned_average_of_the_layers(head):
    torch.manual_seed(0)
    model = head(bilm_config(layer_mix=True, num_labels=3, classifier_pooling="mean")).eval()
    with torch.no_grad():
        model.layer_mix.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.layer_mix.gamma.fill_(1.5)
    ids = torch.randint(3, 30, (2, 8))
    with torch.no_grad():
        layers = model.model(ids, output_hidden_states=True).hidden_states[1:]
        weights = torch.tensor([0.5, -1.0, 2.0]).softmax(0)
        mixed = 1.5 * sum(w * h for w, h in zip(weights, layers))
        expected = model.classifier(mixed) if head is RNNLMForTokenClassification else model.score(mixed.mean(1))
        torch.testing.assert_close(model(ids).logits, expected)
    with pytest.raises(ValueError, match="layer_mix=True.*one size"):
        RNNLMConfig(num_hidden_layers=2, hidden_sizes=[8, 4], layer_mix=True)


@pytest.mark.parametrize("head_embedding_size", [0, 3])
@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("head", [RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_head_rnn_reads_the_layer_mix_and_ignores_padding(head, padding, head_embedding_size):
    """The head BiLSTM reads the layer mix, and with `head_embedding_size` ELMo's `[x_k; ELMo_k]`: the mix beside
    the head's own embedding of each token."""
    torch.manual_seed(0)
    config = bilm_config(layer_mix=True, head_rnn_size=4, num_labels=3, classifier_pooling="concat")
    config.head_embedding_size = head_embedding_size
    model = head(config).eval()
    assert model.config.head_feature_size == 8 and model.config.pooled_size == 24
    assert model.head_rnn.rnn.input_size == config.output_size + head_embedding_size
    ids, mask = torch.randint(3, 30, (2, 8)), PADDINGS[padding]
    real = mask[1].bool()
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        alone = model(ids[1:, real]).logits  # the padded row, without its padding
        # By hand: the head BiLSTM over the layer mix, then the output layer (sequences: last ‖ max ‖ mean).
        mixed = model.layer_mix(model.model(ids[1:, real], output_hidden_states=True).hidden_states[1:])
        if head_embedding_size:
            mixed = torch.cat([mixed, model.head_rnn.embeddings(ids[1:, real])], -1)
        outputs, (h, _) = model.head_rnn.rnn(mixed)
        if head is RNNLMForTokenClassification:
            expected = model.classifier(outputs)
        else:
            pooled = torch.cat([h.transpose(0, 1).flatten(1), outputs.amax(1), outputs.mean(1)], -1)
            expected = model.score(pooled)
    torch.testing.assert_close(alone, expected)
    torch.testing.assert_close(logits[1, real] if logits.dim() == 3 else logits[1], alone[0])
    with pytest.raises(ValueError, match="head_rnn_size"):
        RNNLMConfig(head_rnn_size=-1)
    if head_embedding_size:
        with pytest.raises(ValueError, match="pass input_ids, not inputs_embeds"):
            model(inputs_embeds=model.model.embed(ids))


def test_head_embeddings_need_a_head_rnn_and_follow_a_resized_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="no head RNN: set head_rnn_size"):
        RNNLMConfig(head_embedding_size=3)
    torch.manual_seed(0)
    model = RNNLMForSequenceClassification(bilm_config(head_rnn_size=4, head_embedding_size=3, num_labels=2))
    old_rows = model.head_rnn.embeddings.weight.detach().clone()
    model.resize_token_embeddings(40, mean_resizing=False)  # as ULMFiT's vocabulary mapping does (--task_vocabulary)
    rows = model.head_rnn.embeddings.weight
    assert rows.shape == (40, 3) and model.config.vocab_size == 40 and rows.requires_grad
    torch.testing.assert_close(rows[:30], old_rows)
    model.save_pretrained(tmp_path)
    loaded = RNNLMForSequenceClassification.from_pretrained(tmp_path)
    assert all(torch.equal(tensor, loaded.state_dict()[name]) for name, tensor in model.state_dict().items())


def test_training_script_reports_a_perplexity_per_direction(tmp_path, corpus):
    overrides = "hidden_size=16,num_hidden_layers=2,bidirectional=true,separate_directions=true"
    args = tiny_run_args(corpus, tmp_path / "run", "--max_steps", "4", "--stateful", "false")
    args[args.index("--config_overrides") + 1] = overrides
    metrics = train_clm.main(args)
    for direction in ("", "backward_"):
        assert 1 < metrics[f"eval_{direction}perplexity"] < 1000
    assert json.loads((tmp_path / "run" / "config.json").read_text())["separate_directions"] is True
    assert "peters2018deep" in (tmp_path / "run" / "README.md").read_text()  # the card cites ELMo's biLM
    assert train_clm.cli(tiny_run_args(corpus, tmp_path / "stateful", "--config_overrides", overrides)) == 2


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_flair_word_features_read_the_right_character_positions(padding):
    """Each position reads the forward state there and the backward state at its word's first character."""
    torch.manual_seed(0)
    space = 4
    rows = [[5, 6, 7, space, 8, 9, space, 10], [11, space, 12, 13, space]]  # words: 5 6 7 | 8 9 | 10, and 11 | 12 13
    width = max(map(len, rows))
    ids, mask = torch.zeros(2, width, dtype=torch.long), torch.zeros(2, width, dtype=torch.long)
    for r, row in enumerate(rows):
        place = slice(width - len(row), width) if padding == "left" else slice(0, len(row))
        ids[r, place], mask[r, place] = torch.tensor(row), 1
    if padding == "none":
        ids, mask = ids[:1], mask[:1]
    model = RNNLMForTokenClassification(bilm_config(num_labels=3, word_separator_id=space)).eval()
    seen = {}
    model.classifier.register_forward_hook(lambda module, args, output: seen.update(features=args[0]))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        states = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    for r in range(len(ids)):
        start = None
        for t in range(width):
            if not mask[r, t] or ids[r, t] == space:
                start = None
                continue
            start = t if start is None else start
            torch.testing.assert_close(seen["features"][r, t, :6], states[r, t, :6])
            torch.testing.assert_close(seen["features"][r, t, 6:], states[r, start, 6:])
    with pytest.raises(ValueError, match="word_separator_id.*bidirectional=True"):
        RNNLMConfig(word_separator_id=4)


def word_accuracy(tagger: Path, conll: Path) -> float:
    """Token accuracy of a character-level tagger on a CoNLL file, each word's tag read at its last character."""
    model = RNNLMForTokenClassification.from_pretrained(tagger).eval()
    tokenizer = AutoTokenizer.from_pretrained(tagger)
    right = total = 0
    for block in conll.read_text().strip().split("\n\n"):
        words, tags = zip(*(line.split("\t") for line in block.splitlines()))
        encoded = tokenizer(" ".join(words), return_offsets_mapping=True, return_tensors="pt")
        ends = [end for _, end in encoded.pop("offset_mapping")[0].tolist()]
        with torch.no_grad():
            predicted = model(**encoded).logits.argmax(-1)[0].tolist()
        end = -1
        for word, tag in zip(words, tags):
            end += 1 + len(word)  # the character after the word's last one: words are joined by one space
            right += model.config.id2label[predicted[ends.index(end)]] == tag
            total += 1
    return right / total


def test_flair_pipeline_character_bilm_into_a_tagger(tmp_path, corpus):
    """Flair's recipe end to end: a character-level bidirectional LM, then a tagger on its word features."""
    from rnn_lm_hf.training import train_token_classification

    overrides = "hidden_size=16,num_hidden_layers=1,bidirectional=true,separate_directions=true"
    lm_args = tiny_run_args(corpus, tmp_path / "charlm", "--max_steps", "3", "--stateful", "false")
    lm_args[lm_args.index("--config_overrides") + 1] = overrides
    train_clm.main([*lm_args, "--tokenizer_kind", "char"])
    ner = Path(__file__).resolve().parent / "fixtures" / "ner"
    tagger_args = [
        "--model_name_or_path", tmp_path / "charlm", "--train_file", ner / "train.conll", "--validation_file",
        ner / "dev.conll", "--output_dir", tmp_path / "tagger", "--do_train", "--do_eval", "--flair_word_features",
        "--label_sub_token", "last", "--max_steps", "30", "--learning_rate", "0.05", "--use_cpu", "--report_to",
        "none", "--save_strategy", "no",
    ]  # fmt: skip
    metrics = train_token_classification.main([str(arg) for arg in tagger_args])
    # The reported accuracy is the saved tagger's, read at each word's last character, computed here by hand ...
    assert metrics["eval_accuracy"] == pytest.approx(word_accuracy(tmp_path / "tagger", ner / "dev.conll"), abs=1e-9)
    # ... and the word features let it learn the easy fixture: far above tagging every word "O" (26 of 42 words).
    assert metrics["eval_accuracy"] >= 0.9
    config = json.loads((tmp_path / "tagger" / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "charlm")
    assert config["word_separator_id"] == tokenizer.convert_tokens_to_ids(" ") and config["separate_directions"]
    with pytest.raises(ValueError, match="--flair_word_features.*--label_sub_token last"):
        train_token_classification.main([str(arg) for arg in tagger_args if arg not in ("--label_sub_token", "last")])
