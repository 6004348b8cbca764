"""Every language-model recipe in training/configs parses and builds its model (no training)."""

import json
from pathlib import Path

import pytest

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM


CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
LM_RECIPES = sorted(path.name for path in CONFIGS.glob("*.json") if "block_size" in json.loads(path.read_text()))


@pytest.mark.parametrize("name", LM_RECIPES)
def test_lm_recipe_parses_and_builds(name, tmp_path):
    from rnn_lm_hf.training import train_clm

    path = CONFIGS / name
    recipe = json.loads(path.read_text())
    # tf32 is a GPU option: TrainingArguments refuses it on a CPU-only machine.
    extra = ["--tf32", "false"] if recipe.get("tf32") else []
    if "model_name_or_path" in recipe:  # a finetune stage continues a trained model: stand one in
        RNNLMForCausalLM(RNNLMConfig(vocab_size=100, hidden_size=8)).save_pretrained(tmp_path)
        extra += ["--model_name_or_path", str(tmp_path)]
    model_args, data_args, training_args, _ = train_clm.parse_arguments([str(path), *extra])
    if model_args.config_overrides:
        config = RNNLMConfig(vocab_size=10000)  # PTB's: the adaptive softmax's cutoffs lie inside it
        config.update_from_string(model_args.config_overrides)
        model = RNNLMForCausalLM(config)
        if config.hidden_sizes:  # the AWD shape: the narrow last layer feeds the tied softmax directly
            assert model.config.tie_word_embeddings and model.projection is None
    if training_args.nt_asgd or training_args.nt_asgd_finetune:
        assert training_args.eval_strategy != "no"


def test_awd_recipe_has_the_paper_settings():
    """Merity et al. 2018, PTB: 3 layers 1150-1150-400, dropouts 0.4/0.25/0.4/0.1, weight drop 0.5, SGD lr 30,
    clip 0.25, bptt 70, batch 20, AR 2, TAR 1, NT-ASGD n=5."""
    recipe = json.loads((CONFIGS / "awd_lstm_ptb.json").read_text())
    config = RNNLMConfig(vocab_size=10000)
    config.update_from_string(recipe["config_overrides"])
    assert config.layer_hidden_sizes == [1150, 1150, 400] and config.input_size == 400
    assert (config.dropout_input, config.dropout_hidden, config.dropout_output, config.dropout_embedding) == (
        0.4, 0.25, 0.4, 0.1,
    )  # fmt: skip
    assert config.weight_drop == 0.5
    assert sum(p.numel() for p in RNNLMForCausalLM(config).parameters()) == pytest.approx(24e6, rel=0.03)
    expected = {"learning_rate": 30.0, "max_grad_norm": 0.25, "block_size": 70, "per_device_train_batch_size": 20,
                "activation_regularization": 2.0, "temporal_activation_regularization": 1.0, "nt_asgd_nonmono": 5}  # fmt: skip
    assert {key: recipe[key] for key in expected} == expected


TAGGER_RECIPES = sorted(
    path.name for path in CONFIGS.glob("*.json") if "conll" in json.loads(path.read_text()).get("train_file", "")
)


@pytest.mark.parametrize("name", TAGGER_RECIPES)
def test_tagger_recipe_parses_and_builds(name, shared_data, monkeypatch):
    """Every tagger recipe (BiLSTM, with a CRF, character-level with Flair's word features) parses with the script's
    own arguments and builds its head with the labels of its data."""
    from rnn_lm_hf import RNNLMForTokenClassification
    from rnn_lm_hf.training import train_token_classification
    from rnn_lm_hf.training.finetuning import parse_finetuning_args

    monkeypatch.chdir(CONFIGS.parents[1])  # the recipes name ../shared/data relative to the repository
    model_args, data_args, *_ = parse_finetuning_args(train_token_classification.DataArguments, [str(CONFIGS / name)])
    config = RNNLMConfig(vocab_size=100, id2label={0: "O", 1: "B-X", 2: "I-X"})
    config.update_from_string(model_args.config_overrides)
    if data_args.flair_word_features:
        assert model_args.tokenizer_kind == "char" and data_args.label_sub_token == "last"
        config.word_separator_id = 4
    model = RNNLMForTokenClassification(config)
    assert (model.crf is not None) == config.use_crf


def test_elmo_recipe_is_the_bilstm_recipe_plus_the_frozen_word_bilm(monkeypatch, tmp_path):
    """rt_polarity_elmo.json is the from-scratch BiLSTM's recipe with ELMo's features added (Peters et al. 2018):
    the same data and training settings, a head BiLSTM with the BiLSTM's sizes, dropout and pooling over its own
    word embeddings and the frozen word biLM's layer mix; the LM is what wikitext2_word_bilm.json trains."""
    from rnn_lm_hf.training import train_sequence_classification
    from rnn_lm_hf.training.finetuning import parse_finetuning_args

    elmo, bilstm, lm = (
        json.loads((CONFIGS / name).read_text())
        for name in ("rt_polarity_elmo.json", "rt_polarity_bilstm.json", "wikitext2_word_bilm.json")
    )
    own = {
        "model_name_or_path",
        "task_vocabulary",
        "freeze_encoder",
        "config_overrides",
        "output_dir",
        "tokenizer_kind",
    }
    assert {k: v for k, v in elmo.items() if k not in own} == {k: v for k, v in bilstm.items() if k not in own}
    scratch, head = RNNLMConfig(), RNNLMConfig()
    scratch.update_from_string(bilstm["config_overrides"])
    head.update_from_string(elmo["config_overrides"])
    assert (head.head_rnn_size, head.head_embedding_size) == (scratch.hidden_size, scratch.input_size)
    assert (head.classifier_pooling, head.head_dropout) == (scratch.classifier_pooling, scratch.dropout)
    assert head.layer_mix and elmo["model_name_or_path"] == lm["output_dir"]

    monkeypatch.chdir(CONFIGS.parents[1])
    # The word biLM is trained by its own recipe (a clone has none): a folder stands in for it, and the fixture's
    # rt-polarity-shaped folder for ../shared/data/rt-polarity (a user's clone has no ../shared).
    argv = [str(CONFIGS / "rt_polarity_elmo.json"), "--model_name_or_path", str(tmp_path)]
    argv += ["--train_file", str(CONFIGS.parents[1] / "tests" / "fixtures" / "sentiment" / "rt")]
    model_args, _, transfer_args, *_ = parse_finetuning_args(train_sequence_classification.DataArguments, argv)
    assert model_args.task_vocabulary and transfer_args.freeze_encoder and model_args.min_frequency == 2
