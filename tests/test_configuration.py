import json
import logging

import pytest
import torch
from transformers import AutoConfig

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForTokenClassification
from rnn_lm_hf.configuration_rnn_lm import CELL_TYPES
from rnn_lm_hf.modeling_rnn_lm import cell_module


def test_defaults_construct_without_warnings(caplog):
    with caplog.at_level(logging.WARNING):
        config = RNNLMConfig()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert config.model_type == "rnn_lm"
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (10000, 256, 2)
    assert config.layer_types == ["linear_attention"] * 2


def test_every_field_round_trips(tmp_path):
    config = RNNLMConfig(
        vocab_size=50,
        hidden_size=16,
        embedding_size=8,
        num_hidden_layers=3,
        cell_type="rnn",
        rnn_nonlinearity="relu",
        dropout=0.3,
        classifier_dropout=0.1,
        classifier_pooling="max",
        tie_word_embeddings=True,
        initializer_range=0.05,
        init_recurrent_uniform=True,
        use_cache=False,
        pad_token_id=4,
        bos_token_id=5,
        eos_token_id=6,
        num_labels=3,
        return_dict=False,
        output_hidden_states=True,
    )
    as_dict = json.loads(config.to_json_string())
    config.save_pretrained(tmp_path / "sub")
    for loaded in (
        RNNLMConfig.from_pretrained(tmp_path / "sub"),
        RNNLMConfig.from_pretrained(tmp_path, subfolder="sub"),
        AutoConfig.from_pretrained(tmp_path / "sub"),
    ):
        assert isinstance(loaded, RNNLMConfig)
        reloaded = json.loads(loaded.to_json_string())
        # Saving also records where the config class lives, for Hub code.
        assert reloaded.pop("auto_map", None) in (None, {"AutoConfig": "configuration_rnn_lm.RNNLMConfig"})
        assert reloaded == as_dict
    assert as_dict["embedding_size"] == 8 and len(as_dict["id2label"]) == 3 and as_dict["return_dict"] is False


def test_derived_sizes():
    config = RNNLMConfig(hidden_size=16, embedding_size=8, bidirectional=True, cell_type="lstm")
    assert (config.input_size, config.output_size, config.num_directions, config.num_states) == (8, 32, 2, 2)
    assert RNNLMConfig(cell_type="gru").num_states == 1
    assert config.pooled_size == 32
    assert RNNLMConfig(hidden_size=16, bidirectional=True, classifier_pooling="concat").pooled_size == 96


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"cell_type": "transformer"}, "cell_type", "'rnn', 'lstm', 'gru'"),
        ({"rnn_nonlinearity": "sigmoid"}, "rnn_nonlinearity", "'tanh', 'relu'"),
        ({"classifier_pooling": "first"}, "classifier_pooling", "'last', 'mean', 'max', 'concat'"),
        ({"vocab_size": 0}, "vocab_size", "positive int"),
        ({"hidden_size": -4}, "hidden_size", "positive int"),
        ({"num_hidden_layers": 0}, "num_hidden_layers", "positive int"),
        ({"embedding_size": 0}, "embedding_size", "positive int"),
        ({"hidden_size": 2.5}, "hidden_size", "positive int"),
        ({"dropout": 1.0}, "dropout", "[0, 1)"),
        ({"dropout": -0.1}, "dropout", "[0, 1)"),
        ({"classifier_dropout": 1.5}, "classifier_dropout", "[0, 1)"),
        ({"initializer_range": 0}, "initializer_range", "positive"),
        ({"pad_token_id": 10000}, "pad_token_id", "[0, vocab_size=10000)"),
        (
            {"embedding_size": 8, "hidden_size": 16, "output_projection": False, "tie_word_embeddings": True},
            "tie_word_embeddings",
            "embedding_size == hidden_size, or output_projection=True, or tie_word_embeddings=False",
        ),
    ],
)
def test_invalid_values_name_field_and_allowed_values(kwargs, field, allowed):
    with pytest.raises(ValueError) as error:
        RNNLMConfig(**kwargs)
    assert field in str(error.value) and allowed in str(error.value)


def test_untied_model_without_projection_is_valid():
    config = RNNLMConfig(embedding_size=8, hidden_size=16, output_projection=False, tie_word_embeddings=False)
    assert config.lm_input_size == 16


def test_bidirectional_causal_lm_is_rejected():
    config = RNNLMConfig(vocab_size=20, hidden_size=8, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional.*bidirectional=False for RNNLMForCausalLM"):
        RNNLMForCausalLM(config)


def build_seeded(config: RNNLMConfig) -> RNNLMForTokenClassification:
    torch.manual_seed(0)
    return RNNLMForTokenClassification(config).eval()


@pytest.mark.parametrize(
    ("cell_type", "nonlinearity", "bidirectional"),
    [*((cell_type, "tanh", False) for cell_type in CELL_TYPES), ("rnn", "relu", False), ("gru", "tanh", True)],
)
def test_cell_type_round_trip_builds_the_same_architecture(tmp_path, cell_type, nonlinearity, bidirectional):
    """A saved and reloaded config builds the same network: module types, parameter names and shapes, outputs."""
    kwargs = {"cell_type": cell_type, "rnn_nonlinearity": nonlinearity, "bidirectional": bidirectional}
    config = RNNLMConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, **kwargs)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert {key: getattr(loaded, key) for key in kwargs} == kwargs

    model, again = build_seeded(config), build_seeded(loaded)
    assert [type(module) for module in again.modules()] == [type(module) for module in model.modules()]
    for layer in again.model.layers:
        module = cell_module(CELL_TYPES[cell_type].module)
        assert type(layer.rnn) is module and layer.rnn.bidirectional == bidirectional
        assert cell_type != "rnn" or layer.rnn.nonlinearity == nonlinearity
    shapes = {name: param.shape for name, param in model.named_parameters()}
    assert {name: param.shape for name, param in again.named_parameters()} == shapes
    # Same seed, same architecture and initialisation: the same weights, so the same outputs.
    input_ids = torch.randint(0, 20, (2, 5))
    torch.testing.assert_close(again(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("cell_type", list(CELL_TYPES))
def test_the_cell_table_drives_the_model_card_and_analysis(cell_type):
    """One entry of CELL_TYPES says what the package knows of a cell: its module, state tensors, gate blocks (the
    analysis's per-gate norms and the forget-gate init) and the card's name and citation."""
    from rnn_lm_hf.analysis import recurrent_spectral_norms
    from tests.conftest import cache_of

    cell = CELL_TYPES[cell_type]
    config = RNNLMConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, cell_type=cell_type)
    model = RNNLMForCausalLM(config)
    layer = model.model.layers[0]
    assert type(layer.rnn).__name__ == cell.module and config.num_states == cell.num_states
    assert layer.rnn.weight_ih_l0.shape[0] == len(cell.gates) * 8
    recurrent = hasattr(layer.rnn, "weight_hh_l0")  # a cell whose state enters no matrix has no W_hh to measure
    assert list(recurrent_spectral_norms(model)[0]["per_gate"]) == (list(cell.gates) if recurrent else [])
    assert any(name.startswith(cell.weight_drop_on) for name, _ in layer.rnn.named_parameters())
    bias = layer.rnn.bias_ih_l0.detach().view(len(cell.gates), 8)
    for gate, row in zip(cell.gates, bias):
        assert torch.all(row == (1.0 if gate == cell.forget_gate else 0.0)), gate
    state = cache_of(model.model(torch.tensor([[1, 2, 3]]), use_cache=True)).layers[0].recurrent_states[0]
    assert state.shape == (1, cell.num_states, 8)
    assert cell.citation.startswith("@") and cell.citation.endswith("}")  # BibTeX, cited by the card


def test_merge_overrides_replaces_and_adds_keys_in_the_override_syntax():
    merged = RNNLMConfig.merge_overrides(
        "hidden_size=200,softmax_cutoffs=2000/5000", {"softmax_cutoffs": None, "x": 1}
    )
    assert merged == "hidden_size=200,softmax_cutoffs=None,x=1"
    config = RNNLMConfig(vocab_size=10000)
    config.update_from_string(RNNLMConfig.merge_overrides("softmax_cutoffs=2000/5000", {"hidden_size": 64}))
    assert (config.softmax_cutoffs, config.hidden_size) == ([2000, 5000], 64)
