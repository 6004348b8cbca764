"""Transfer from a causal-LM checkpoint into both heads (ULMFiT), discriminative learning rates, gradual unfreezing."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerState, TrainingArguments

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification
from rnn_lm_hf.tokenization import train_tokenizer, word_tokenizer_from_vocab
from rnn_lm_hf.training import train_sequence_classification, train_token_classification
from rnn_lm_hf.training.finetuning import GradualUnfreezingCallback, TransferArguments, TransferTrainer, layer_groups
from rnn_lm_hf.training.scaffold import ModelArguments, build_model, get_tokenizer
from rnn_lm_hf.training.scaffold import parse_script_args as parse_args


FIXTURES = Path(__file__).resolve().parent / "fixtures"
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]
HEADS = {RNNLMForTokenClassification: "classifier", RNNLMForSequenceClassification: "score"}


def fixture_words() -> list[str]:
    ner = (FIXTURES / "ner" / "train.conll").read_text().split()
    sentiment = (FIXTURES / "sentiment" / "train.tsv").read_text().split()
    return sorted(set(ner + sentiment))


@pytest.fixture(scope="module", params=["lstm", "gru"])
def lm_folder(request, tmp_path_factory) -> Path:
    """A tiny causal LM (with an output projection, so the checkpoint has weights no head uses) and its tokenizer."""
    folder = tmp_path_factory.mktemp(f"lm_{request.param}")
    tokenizer = word_tokenizer_from_vocab(fixture_words())
    config = RNNLMConfig(
        vocab_size=len(tokenizer), hidden_size=16, embedding_size=12, num_hidden_layers=2, cell_type=request.param
    )
    torch.manual_seed(0)
    RNNLMForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("head", list(HEADS), ids=lambda head: head.__name__)
def test_lm_checkpoint_loads_into_head(lm_folder, head):
    lm = RNNLMForCausalLM.from_pretrained(lm_folder)
    model, info = head.from_pretrained(lm_folder, num_labels=3, output_loading_info=True)
    head_name = HEADS[head]
    assert sorted(info["missing_keys"]) == [f"{head_name}.bias", f"{head_name}.weight"]  # only the head is new
    assert {"lm_head.bias", "projection.weight", "projection.bias"} <= set(info["unexpected_keys"])
    lm_state, head_state = lm.model.state_dict(), model.model.state_dict()
    assert lm_state.keys() == head_state.keys()
    for name, tensor in lm_state.items():  # embeddings and every recurrent weight
        torch.testing.assert_close(head_state[name], tensor, rtol=0, atol=0, msg=name)
    assert getattr(model, head_name).weight.shape == (3, 16)


@pytest.mark.parametrize("head", list(HEADS), ids=lambda head: head.__name__)
def test_build_model_from_lm_keeps_architecture(lm_folder, head):
    tokenizer = word_tokenizer_from_vocab(fixture_words())
    id2label = {0: "neg", 1: "pos"}
    args = ModelArguments(model_name_or_path=str(lm_folder), config_overrides="dropout=0.2,classifier_dropout=0.1")
    model = build_model(head, args, tokenizer, id2label)
    assert model.config.id2label == id2label and model.config.label2id == {"neg": 0, "pos": 1}
    assert (model.config.dropout, model.config.classifier_dropout) == (0.2, 0.1)
    new_head = getattr(model, HEADS[head])
    assert not new_head.weight.any() and not new_head.bias.any()  # the new head starts at zero (BiT)
    args.zero_init_head = False
    assert build_model(head, args, tokenizer, id2label).get_submodule(HEADS[head]).weight.any()
    args.config_overrides = "hidden_size=32,dropout=0.2"
    with pytest.raises(ValueError, match="hidden_size would change the architecture"):
        build_model(head, args, tokenizer, id2label)
    args.config_overrides = "separate_directions=true"  # a biLM's second stack: it shapes the weights too
    with pytest.raises(ValueError, match="separate_directions would change the architecture"):
        build_model(head, args, tokenizer, id2label)


@pytest.mark.parametrize("head", list(HEADS), ids=lambda head: head.__name__)
def test_only_the_new_output_layer_starts_at_zero(lm_folder, head):
    """A layer mix at zero with a zero output layer would get no gradient, and neither would the head."""
    tokenizer = word_tokenizer_from_vocab(fixture_words())
    args = ModelArguments(model_name_or_path=str(lm_folder), config_overrides="layer_mix=true")
    model = build_model(head, args, tokenizer, {0: "neg", 1: "pos"})
    assert not getattr(model, HEADS[head]).weight.any()
    assert model.layer_mix.gamma.item() == 1.0 and not model.layer_mix.layer_weights.any()  # the plain average
    input_ids = torch.tensor([[1, 2, 3, 4]])
    labels = torch.tensor([[0, 1, 0, 1]]) if head is RNNLMForTokenClassification else torch.tensor([1])
    model.train()
    model(input_ids, labels=labels).loss.backward()
    assert getattr(model, HEADS[head]).weight.grad.any()


def test_apply_config_overrides_sets_none_fields_and_validates():
    config = RNNLMConfig()
    config.update_from_string("embedding_size=8,classifier_dropout=0.25,bidirectional=true,cell_type=gru")
    assert (config.embedding_size, config.classifier_dropout, config.bidirectional, config.cell_type) == (
        8,
        0.25,
        True,
        "gru",
    )
    with pytest.raises(ValueError, match="'hidden=3'.*a field of RNNLMConfig"):
        config.update_from_string("hidden=3")
    with pytest.raises(ValueError, match="cell_type"):
        config.update_from_string("cell_type=transformer")


def test_fine_tune_tagger_from_lm_with_gradual_unfreezing(lm_folder, tmp_path):
    ner = FIXTURES / "ner"
    argv = ["--model_name_or_path", str(lm_folder), "--train_file", str(ner / "train.conll")]
    argv += ["--test_file", str(ner / "test.conll"), "--output_dir", str(tmp_path), "--do_train", "--do_predict"]
    # 24 sentences / batch 4 = 6 steps per epoch: 3 steps stay in epoch 1, where only the head trains.
    argv += ["--gradual_unfreezing", "true", "--per_device_train_batch_size", "4", "--max_steps", "3"]
    metrics = train_token_classification.main([*argv, "--learning_rate", "0.05", *COMMON])
    assert "test_f1" in metrics and metrics["train_loss"] > 0
    lm, tuned = load_file(lm_folder / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    for name, tensor in tuned.items():
        if name.startswith("model."):
            torch.testing.assert_close(tensor, lm[name], rtol=0, atol=0, msg=name)  # frozen in epoch 1
    fresh = RNNLMForTokenClassification.from_pretrained(lm_folder, num_labels=6)
    assert fresh.classifier.weight.shape == tuned["classifier.weight"].shape


def test_fine_tune_classifier_from_lm_with_discriminative_lr(lm_folder, tmp_path):
    sentiment = FIXTURES / "sentiment"
    argv = ["--model_name_or_path", str(lm_folder), "--train_file", str(sentiment / "train.tsv")]
    argv += ["--validation_file", str(sentiment / "dev.tsv"), "--output_dir", str(tmp_path), "--do_train", "--do_eval"]
    argv += ["--layerwise_lr_decay", "2.6", "--config_overrides", "classifier_pooling=mean", "--max_steps", "3"]
    metrics = train_sequence_classification.main([*argv, *COMMON])
    assert "eval_accuracy" in metrics
    lm, tuned = load_file(lm_folder / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert not torch.equal(tuned["model.embeddings.weight"], lm["model.embeddings.weight"])  # everything trains
    assert not torch.equal(tuned["model.layers.0.rnn.weight_hh_l0"], lm["model.layers.0.rnn.weight_hh_l0"])


def tiny_tagger() -> RNNLMForTokenClassification:
    return RNNLMForTokenClassification(RNNLMConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_labels=3))


def test_discriminative_param_groups_have_ulmfit_learning_rates(tmp_path):
    model = tiny_tagger()
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=0.01, weight_decay=0.1, use_cpu=True)
    trainer = TransferTrainer(model=model, args=args, transfer_args=TransferArguments(layerwise_lr_decay=2.0))
    optimizer = trainer.create_optimizer()
    lrs = {}
    for group in optimizer.param_groups:
        lrs.setdefault(group["group_name"], set()).add(group["lr"])
        if any(p is model.classifier.bias for p in group["params"]):
            assert group["weight_decay"] == 0.0  # biases are never decayed, as in Trainer
    assert lrs == {"head": {0.01}, "layer_1": {0.005}, "layer_0": {0.0025}, "embeddings": {0.00125}}
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))


def test_gradual_unfreezing_callback_unfreezes_one_group_per_epoch():
    model = tiny_tagger()
    callback = GradualUnfreezingCallback(model)
    assert [name for name, _ in layer_groups(model)] == ["head", "layer_1", "layer_0", "embeddings"]

    def trainable_modules() -> set[str]:
        # "model.layers.1.rnn.weight_ih_l0" -> "model.layers.1"; "classifier.weight" -> "classifier"
        return {
            ".".join(name.split(".")[:3]) if name.startswith("model.layers.") else name.rsplit(".", 1)[0]
            for name, param in model.named_parameters()
            if param.requires_grad
        }

    top_down = ["classifier", "model.layers.1", "model.layers.0", "model.embeddings"]
    for epoch in range(6):  # epoch k trains the top k+1 groups; from epoch 3 on, everything
        callback.on_epoch_begin(None, TrainerState(epoch=float(epoch)), None)
        assert trainable_modules() == set(top_down[: epoch + 1]), epoch
    callback.on_epoch_begin(None, TrainerState(epoch=0.0), None)
    callback.on_train_end(None, TrainerState(), None)
    assert trainable_modules() == set(top_down)


def test_layer_groups_put_the_backward_lm_with_its_layer_and_the_char_cnn_with_the_embeddings():
    config = RNNLMConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, bidirectional=True, num_labels=3)
    config.update({"separate_directions": True, "char_cnn_filters": 4, "char_vocab_size": 5, "head_rnn_size": 3})
    groups = dict(layer_groups(RNNLMForTokenClassification(config)))
    names = {group: {name.split(".")[1] if name.startswith("model.") else name.split(".")[0] for name, _ in named}
             for group, named in groups.items()}  # fmt: skip
    assert names == {
        "head": {"classifier", "head_rnn"},
        "layer_1": {"layers", "reverse_layers"},
        "layer_0": {"layers", "reverse_layers"},
        "embeddings": {"embeddings", "spelling"},
    }


def test_freeze_encoder_trains_only_the_head(lm_folder, tmp_path):
    """ELMo's feature-based use: the LM's weights come out of training unchanged; the head RNN, its own token
    embeddings (ELMo's `[x_k; ELMo_k]`) and the output layer do not."""
    sentiment = FIXTURES / "sentiment"
    argv = ["--model_name_or_path", str(lm_folder), "--train_file", str(sentiment / "train.tsv"), "--do_train"]
    argv += ["--max_steps", "3", "--freeze_encoder", "true"]
    argv += ["--config_overrides", "head_rnn_size=5,head_embedding_size=4"]
    tuned = {}
    for learning_rate in ("0", "0.05"):  # the same seed: at 0, the weights the head started from
        output_dir = tmp_path / learning_rate
        train_sequence_classification.main(
            [*argv, "--learning_rate", learning_rate, "--output_dir", str(output_dir), *COMMON]
        )
        tuned[learning_rate] = load_file(output_dir / "model.safetensors")
    lm, start, trained = load_file(lm_folder / "model.safetensors"), tuned["0"], tuned["0.05"]
    encoder = [name for name in trained if name.startswith("model.")]
    assert encoder and all(torch.equal(trained[name], lm[name]) for name in encoder)
    for name in ("head_rnn.embeddings.weight", "head_rnn.rnn.weight_ih_l0", "head_rnn.rnn.weight_hh_l0_reverse"):
        assert not torch.equal(trained[name], start[name]), name
    assert not torch.equal(trained["score.weight"], start["score.weight"])
    assert trained["head_rnn.rnn.weight_ih_l0"].shape == (4 * 5, 16 + 4)  # the LM's 16 features, 4 of its own
    with pytest.raises(ValueError, match="pick one"):
        TransferArguments(freeze_encoder=True, gradual_unfreezing=True)


def test_lm_adaptation_trains_the_lm_on_each_folds_training_texts_only(lm_folder, tmp_path):
    """ULMFiT's target-task LM fine-tuning inside cross-validation: each fold adapts the LM on its own training
    texts (never its test or validation texts), and the head starts from the adapted LM, not the original one."""
    rt = FIXTURES / "sentiment" / "rt"
    argv = ["--model_name_or_path", str(lm_folder), "--train_file", str(rt), "--encoding", "latin-1"]
    argv += ["--cv_folds", "2", "--validation_split_percentage", "20", "--do_train", "--max_steps", "2"]
    argv += ["--lm_adaptation_epochs", "2", "--lm_adaptation_learning_rate", "0.05", "--freeze_encoder", "true"]
    argv += ["--lm_adaptation_block_size", "8"]
    train_sequence_classification.main([*argv, "--output_dir", str(tmp_path), *COMMON])
    texts = [
        " ".join(line.split()) for path in sorted(rt.iterdir()) for line in path.read_text("latin-1").splitlines()
    ]
    lm = load_file(lm_folder / "model.safetensors")
    for fold in range(2):
        folder = tmp_path / f"fold_{fold}"
        adapted_texts = (folder / "adapted_lm" / "train.txt").read_text().splitlines()
        tested = [line.split("\t", 1)[1] for line in (folder / "test_predictions.tsv").read_text().splitlines()]
        assert not set(adapted_texts) & set(tested)
        validation = (folder / "adapted_lm" / "validation.txt").read_text().splitlines()  # scored, never trained on
        trained = len(texts) - len(tested)
        assert len(validation) == math.ceil(trained * 0.2) and len(adapted_texts) == trained - len(validation)
        assert sorted(adapted_texts + validation + tested) == sorted(texts)
        assert "eval_perplexity" in json.loads((folder / "adapted_lm" / "run_info.json").read_text())["metrics"]
        adapted = load_file(folder / "adapted_lm" / "model.safetensors")
        classifier = load_file(folder / "model.safetensors")
        assert not torch.equal(adapted["model.embeddings.weight"], lm["model.embeddings.weight"])
        for name, tensor in classifier.items():  # the frozen encoder is the adapted LM's
            if name.startswith("model."):
                assert torch.equal(tensor, adapted[name]), name
    with pytest.raises(ValueError, match="not one"):
        train_sequence_classification.main(
            [*argv, "--model_name_or_path", str(tmp_path / "fold_0"), "--output_dir", str(tmp_path / "x"), *COMMON]
        )


def test_task_vocabulary_keeps_the_lms_rows_for_known_words_and_their_mean_for_new_ones(tmp_path):
    """ULMFiT's vocabulary mapping: the classifier's tokenizer is the task's own (its training split, the LM's
    lowercasing), a word the LM knows starts from its LM row, a new word from the mean of the LM's rows, and the
    recurrent layers are the LM's; the random-weight control gets the same tokenizer."""
    sentiment = FIXTURES / "sentiment"
    lm_words = fixture_words()[::2] + ["wikipedia"]  # half the task's words, and one it never uses
    lm_tokenizer = word_tokenizer_from_vocab(lm_words, lowercase=True)
    torch.manual_seed(0)
    config = RNNLMConfig(vocab_size=len(lm_tokenizer), hidden_size=16, embedding_size=12, num_hidden_layers=2)
    RNNLMForCausalLM(config).save_pretrained(tmp_path / "lm")
    lm_tokenizer.save_pretrained(tmp_path / "lm")
    train = tmp_path / "train.tsv"  # capitalised: the task's tokenizer must lowercase as the LM's does
    header, *lines = (sentiment / "train.tsv").read_text().splitlines(keepends=True)
    train.write_text(header + "".join(lines).title())
    argv = ["--train_file", str(train), "--validation_file", str(sentiment / "dev.tsv")]
    argv += ["--task_vocabulary", "true", "--do_train", "--max_steps", "1", "--learning_rate", "0", *COMMON]
    train_sequence_classification.main(
        ["--model_name_or_path", str(tmp_path / "lm"), *argv, "--output_dir", str(tmp_path / "clf")]
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "clf")
    train_texts = [line.split("\t")[0] for line in (sentiment / "train.tsv").read_text().splitlines()[1:]]
    assert set(tokenizer.get_vocab()) == {word for text in train_texts for word in text.split()} | {
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
    }
    lm, tuned = load_file(tmp_path / "lm" / "model.safetensors"), load_file(tmp_path / "clf" / "model.safetensors")
    lm_rows, rows, lm_vocab = lm["model.embeddings.weight"], tuned["model.embeddings.weight"], lm_tokenizer.get_vocab()
    assert rows.shape == (len(tokenizer), 12) and "wikipedia" not in tokenizer.get_vocab()
    assert RNNLMConfig.from_pretrained(tmp_path / "clf").vocab_size == len(tokenizer)
    known = {token: i for token, i in tokenizer.get_vocab().items() if token in lm_vocab}
    assert 4 < len(known) < len(tokenizer)  # the specials, some shared words, and new ones
    for token, i in tokenizer.get_vocab().items():
        expected = lm_rows[lm_vocab[token]] if token in known else lm_rows.mean(0)
        torch.testing.assert_close(rows[i], expected, msg=token)
    for name, tensor in lm.items():  # the recurrent layers are the LM's
        if name.startswith("model.layers."):
            assert torch.equal(tuned[name], tensor), name
    # The control (the LM's config and tokenizer settings, random weights) reads the same vocabulary.
    control = ["--config_name", str(tmp_path / "lm"), "--tokenizer_name", str(tmp_path / "lm")]
    train_sequence_classification.main([*control, *argv, "--output_dir", str(tmp_path / "control")])
    assert AutoTokenizer.from_pretrained(tmp_path / "control").get_vocab() == tokenizer.get_vocab()


def test_task_vocabulary_needs_a_word_level_lm_without_a_character_cnn(tmp_path):
    texts = ["a fine film", "a dull film"]
    train_tokenizer(texts, kind="bpe", vocab_size=300).save_pretrained(tmp_path / "bpe")
    with pytest.raises(ValueError, match="not a word-level tokenizer"):
        get_tokenizer(ModelArguments(tokenizer_name=str(tmp_path / "bpe"), task_vocabulary=True), lambda: texts)
    tokenizer = train_tokenizer(texts)
    config = RNNLMConfig(vocab_size=len(tokenizer), hidden_size=8, char_cnn_filters=4, char_vocab_size=20)
    RNNLMForCausalLM(config).save_pretrained(tmp_path / "char_cnn")
    tokenizer.save_pretrained(tmp_path / "char_cnn")
    args = ModelArguments(model_name_or_path=str(tmp_path / "char_cnn"), task_vocabulary=True)
    with pytest.raises(ValueError, match="character CNN"):
        build_model(RNNLMForSequenceClassification, args, get_tokenizer(args, lambda: texts), {0: "neg", 1: "pos"})


def test_parse_args_json_then_flags(tmp_path):
    config = tmp_path / "args.json"
    config.write_text('{"config_overrides": "hidden_size=8", "layerwise_lr_decay": 2.6, "gradual_unfreezing": true}')
    model_args, transfer_args = parse_args((ModelArguments, TransferArguments), [str(config)])
    assert (model_args.config_overrides, transfer_args.layerwise_lr_decay, transfer_args.gradual_unfreezing) == (
        "hidden_size=8",
        2.6,
        True,
    )
    # Flags after the file win (the benchmark driver points a config at another output folder this way).
    _, transfer_args = parse_args((ModelArguments, TransferArguments), [str(config), "--gradual_unfreezing", "false"])
    assert transfer_args.gradual_unfreezing is False and transfer_args.layerwise_lr_decay == 2.6
    config.write_text('{"no_such_option": 1}')
    with pytest.raises(ValueError, match="no_such_option"):
        parse_args((ModelArguments, TransferArguments), [str(config)])
