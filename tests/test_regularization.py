"""AWD-LSTM regularisation in the model (Merity et al. 2018): locked, embedding and weight dropout, per-layer sizes."""

import pytest
import torch
from torch import nn

from rnn_lm_hf import RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification, RNNLMModel
from rnn_lm_hf.modeling_rnn_lm import PaddingPacker, locked_dropout
from tests.conftest import CELL_TYPES, cache_of, make_config, run_hub_code


AWD = {
    "dropout_embedding": 0.1,
    "dropout_input": 0.3,
    "dropout_hidden": 0.25,
    "dropout_output": 0.4,
    "weight_drop": 0.5,
}


def ids(batch=3, seq_len=9, vocab=99):
    return torch.randint(3, vocab, (batch, seq_len))


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_every_dropout_is_the_identity_in_eval(cell_type):
    regularised = RNNLMForCausalLM(make_config(cell_type, **AWD)).eval()
    plain = RNNLMForCausalLM(make_config(cell_type)).eval()
    plain.load_state_dict(regularised.state_dict())
    input_ids = ids()
    torch.testing.assert_close(regularised(input_ids).logits, plain(input_ids).logits)
    regularised.train()
    assert not torch.allclose(regularised(input_ids).logits, plain(input_ids).logits)


def test_locked_mask_is_constant_along_time_and_differs_between_sequences():
    x = torch.ones(16, 20, 8)
    dropped = locked_dropout(x, 0.5, training=True)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # one mask per sequence
    assert set(dropped.unique().tolist()) == {0.0, 2.0}  # kept units rescaled by 1 / (1 - p)
    assert len({tuple(row[0].tolist()) for row in dropped}) > 1  # sequences get their own masks
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_locked_mask_on_packed_data_follows_each_sequence():
    """On a packed (padded) batch, every real token of a row gets the same mask, the pads none."""
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]])
    packer = PaddingPacker(mask)
    x = torch.ones(3, 5, 6)
    data, packing = packer.pack(x)
    out = packer.unpack(locked_dropout(data, 0.5, True, packing), packing)  # (3, 5, 6)
    for row in range(3):
        real = out[row][mask[row].bool()]
        assert torch.equal(real, real[:1].expand_as(real))
        assert torch.all(out[row][~mask[row].bool()] == 0)


def test_embedding_dropout_drops_whole_word_types_with_rescaling():
    model = RNNLMModel(make_config("lstm", dropout_embedding=0.5, vocab_size=10)).train()
    input_ids = torch.tensor([[3, 4, 3, 5, 4, 3, 6, 7]])
    weight = model.embeddings.weight
    for _ in range(5):
        embeds = model.embed(input_ids)[0]  # (8, 32)
        for token in input_ids[0].unique():
            rows = embeds[input_ids[0] == token]
            dropped = torch.all(rows == 0)
            # Every occurrence is dropped together, or kept and scaled by 1 / (1 - p).
            assert dropped or torch.allclose(rows, weight[token].expand_as(rows) * 2)


def lstm_forward_calls(model):
    calls = []
    for layer in model.model.layers:
        layer.rnn.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_weight_drop_new_mask_per_forward_none_in_eval_and_fused():
    model = RNNLMForCausalLM(make_config("lstm", weight_drop=0.5)).train()
    input_ids = ids(seq_len=12)
    calls = lstm_forward_calls(model)
    first, second = model(input_ids).logits, model(input_ids).logits
    assert not torch.allclose(first, second)  # a new DropConnect mask per training forward
    assert len(calls) == 2 * 2  # one fused call per layer and forward, never a loop over the 12 time steps
    model.eval()
    torch.testing.assert_close(model(input_ids).logits, model(input_ids).logits)


def test_weight_drop_equals_a_plain_lstm_with_the_dropped_matrix_and_grads_reach_raw_weights():
    torch.manual_seed(0)
    model = RNNLMModel(make_config("lstm", num_hidden_layers=1, weight_drop=0.5)).train()
    rnn = model.layers[0].rnn
    x = torch.randn(2, 6, 32)
    torch.manual_seed(1)
    output, _ = model.layers[0](x)
    torch.manual_seed(1)
    dropped = nn.functional.dropout(rnn.weight_hh_l0, 0.5, training=True)
    reference = nn.LSTM(32, 32, batch_first=True)
    reference.load_state_dict({**rnn.state_dict(), "weight_hh_l0": dropped.detach()})
    torch.testing.assert_close(output, reference(x)[0])
    output.sum().backward()
    assert rnn.weight_hh_l0.grad is not None and rnn.weight_hh_l0.grad.abs().sum() > 0
    assert torch.all(rnn.weight_hh_l0.grad[dropped == 0] == 0)  # dropped connections get no gradient


def test_regularised_model_saves_loads_and_runs_as_hub_code(tmp_path):
    config = make_config("lstm", num_hidden_layers=3, hidden_sizes=[40, 40, 32], **AWD)
    model = RNNLMForCausalLM(config).eval()
    plain_keys = set(
        RNNLMForCausalLM(make_config("lstm", num_hidden_layers=3, hidden_sizes=[40, 40, 32])).state_dict()
    )
    assert set(model.state_dict()) == plain_keys  # plain names: no `_raw` weights, no patched modules
    type(model).register_for_auto_class("AutoModelForCausalLM")
    model.save_pretrained(tmp_path / "m")
    input_ids = ids(batch=1)
    torch.testing.assert_close(
        RNNLMForCausalLM.from_pretrained(tmp_path / "m")(input_ids).logits, model(input_ids).logits
    )
    torch.save(input_ids, tmp_path / "ids.pt")
    torch.save(model(input_ids).logits, tmp_path / "logits.pt")
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "assert 'rnn_lm_hf' not in sys.modules\n"
        "ids = torch.load(sys.argv[2], weights_only=True)\n"
        "torch.testing.assert_close(m(ids).logits, torch.load(sys.argv[3], weights_only=True))\n"
        "m.train(); m(ids).logits.sum().backward()\n"
    )
    run_hub_code(script, str(tmp_path / "m"), str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt"), cwd=tmp_path)


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_per_layer_sizes_tie_without_projection_and_keep_the_cache_exact(cell_type):
    """AWD's 1150-1150-400 shape, scaled down: the narrow last layer feeds the tied softmax directly."""
    config = make_config(cell_type, num_hidden_layers=3, hidden_sizes=[48, 48, 16], embedding_size=16)
    model = RNNLMForCausalLM(config).eval()
    assert model.projection is None and model.lm_head.weight is model.model.embeddings.weight
    assert [layer.rnn.hidden_size for layer in model.model.layers] == [48, 48, 16]
    input_ids = ids(seq_len=8)
    full = model(input_ids).logits
    out = model(input_ids[:, :5], use_cache=True)
    steps = [out.logits]
    for t in range(5, 8):
        out = model(input_ids[:, t : t + 1], cache=cache_of(out), use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_per_layer_sizes_must_match_the_layer_count():
    with pytest.raises(ValueError, match="hidden_sizes"):
        make_config("lstm", num_hidden_layers=3, hidden_sizes=[8, 8])
    config = make_config("lstm")
    config.update_from_string("num_hidden_layers=3,hidden_sizes=20/20/32,weight_drop=0.5")
    assert config.hidden_sizes == [20, 20, 32] and config.weight_drop == 0.5 and config.output_size == 32


@pytest.mark.parametrize("field", sorted(AWD))
def test_dropout_fields_are_validated(field):
    with pytest.raises(ValueError, match=field):
        make_config("lstm", **{field: 1.0})


def test_bidirectional_features_are_twice_the_hidden_size():
    """Decided: a bidirectional encoder concatenates both directions, `config.output_size` = 2 * hidden_size."""
    config = make_config("gru", bidirectional=True, hidden_sizes=[32, 24], num_labels=3)
    out = RNNLMModel(config)(ids())
    assert out.last_hidden_state.shape[-1] == config.output_size == 48
    assert RNNLMForTokenClassification(config).classifier.in_features == 48
    assert RNNLMForSequenceClassification(config).score.in_features == 48
