"""minGRU (`cell_type="mingru"`), the cell that trains in parallel over time: what the shared cell tests (every test
parametrized over `CELL_TYPES`) cannot say of it. Its scan must be the recurrence it stands for, in values and in
gradients, over block boundaries, saturated gates, padding and long sequences, in fp32 and bf16; it must
not loop over tokens."""

import math

import pytest
import torch
from torch import nn

from rnn_lm_hf import (
    RNNLMConfig,
    RNNLMForCausalLM,
    RNNLMForSequenceClassification,
    RNNLMForTokenClassification,
    modeling_rnn_lm,
)
from rnn_lm_hf.modeling_rnn_lm import MinGRU
from tests.conftest import cache_of, make_config


def recurrence(cell: MinGRU, x: torch.Tensor, h: torch.Tensor | None = None, suffix: str = "_l0") -> torch.Tensor:
    """The paper's sequential minGRU, written out from its equations, one token at a time: (batch, seq_len, hidden)."""
    weight, bias = getattr(cell, f"weight_ih{suffix}"), getattr(cell, f"bias_ih{suffix}")
    h = torch.zeros(x.shape[0], cell.hidden_size) if h is None else h
    outputs = []
    for t in range(x.shape[1]):
        gate, candidate = (x[:, t] @ weight.T + bias).chunk(2, -1)
        z = torch.sigmoid(gate)
        candidate = torch.where(candidate >= 0, candidate + 0.5, torch.sigmoid(candidate))
        forget = (1 - z).clamp(min=math.exp(cell.min_log_forget))  # the documented floor of 1 - z
        h = forget * h + z * candidate
        outputs.append(h)
    return torch.stack(outputs, 1)


@pytest.mark.parametrize("gate_bias", [0.0, 9.0])  # 9: 1 - z below its floor e^-7.5 for most units
@pytest.mark.parametrize("length", [40, 41])  # 8 blocks of 5; 7 blocks of 6, the last one padded
def test_scan_and_its_gradients_are_the_recurrence_across_blocks(gate_bias, length):
    cell = MinGRU(6, 8)
    cell.block = 6  # blocks of at most 6 steps, each continuing from the last one's state
    with torch.no_grad():
        cell.bias_ih_l0[:8] += gate_bias
    x = torch.randn(3, length, 6, requires_grad=True)
    h0 = torch.randn(3, 8, requires_grad=True)  # any state, of either sign, continues exactly
    output, h_n = cell(x, h0.unsqueeze(0))
    expected = recurrence(cell, x, h0)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_n[0], expected[:, -1], atol=1e-5, rtol=1e-5)
    weights = [x, cell.weight_ih_l0, cell.bias_ih_l0, h0]  # the scan's own backward, down to the entering state
    grads = torch.autograd.grad((output * torch.linspace(-1, 1, 8)).sum(), weights)
    expected_grads = torch.autograd.grad((expected * torch.linspace(-1, 1, 8)).sum(), weights)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-4, rtol=1e-4)


def test_whole_sequence_forward_equals_token_by_token_decoding_through_the_cache():
    model = RNNLMForCausalLM(make_config("mingru", num_hidden_layers=3)).eval()
    input_ids = torch.randint(3, 99, (2, 30))
    full = model(input_ids).logits
    cache, steps = None, []
    with torch.no_grad():  # the decoding path: one O(1) step per token, the states updated in place
        for t in range(input_ids.shape[1]):
            out = model(input_ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = cache_of(out)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_training_reads_every_position_at_once(monkeypatch):
    """One scan per layer for a whole training window: no Python loop over its tokens."""
    model = RNNLMForCausalLM(make_config("mingru", num_hidden_layers=2)).train()
    scans, original = [], modeling_rnn_lm.linear_scan
    monkeypatch.setattr(modeling_rnn_lm, "linear_scan", lambda *args: scans.append(args[1].shape) or original(*args))
    input_ids = torch.randint(3, 99, (4, 70))
    model(input_ids, labels=input_ids).loss.backward()
    assert scans == [(4, 70, 32)] * 2  # one scan of all 70 tokens in each of the 2 layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stable_over_a_10000_token_sequence(dtype):
    """Long inputs neither overflow nor underflow: the states stay what the recurrence gives, in fp32 and under bf16
    autocast (whose projection is bf16; the scan itself runs in fp32), over 1,250 blocks."""
    cell = MinGRU(4, 8)
    with torch.no_grad():
        cell.bias_ih_l0[:8] = -4.0  # z ~ 0.02: states that remember thousands of tokens
        x = 3 * torch.randn(1, 10_000, 4)
        expected = recurrence(cell, x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            output, h_n = cell(x)
    assert output.dtype == dtype and h_n.dtype == torch.float32
    assert torch.isfinite(output).all() and torch.isfinite(h_n).all()
    tolerance = 1e-4 if dtype == torch.float32 else 0.05  # bf16 rounds the projection to 8 bits of mantissa
    torch.testing.assert_close(output.float(), expected, atol=tolerance, rtol=tolerance)


def test_padding_keeps_the_state_and_gradients_stay_finite():
    """Rows of 9 and 5 tokens, left- and right-padded, give each row's own outputs and final states, and every
    gradient is finite."""
    model = RNNLMForCausalLM(make_config("mingru")).train()  # no dropout in the tiny config
    base = model.model
    rows = [torch.randint(3, 99, (1, 9)), torch.randint(3, 99, (1, 5))]
    alone = [base(row, output_final_states=True) for row in rows]
    long, short = rows[0], rows[1]
    pad = torch.zeros(1, 4, dtype=torch.long)
    for side in ("left", "right"):
        padded = torch.cat([pad, short], 1) if side == "left" else torch.cat([short, pad], 1)
        mask = (padded != 0).long()
        batch = base(torch.cat([long, padded]), attention_mask=torch.cat([torch.ones_like(long), mask]),
                     output_final_states=True)  # fmt: skip
        real = mask[0].bool()
        torch.testing.assert_close(batch.last_hidden_state[0], alone[0].last_hidden_state[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(batch.last_hidden_state[1, real], alone[1].last_hidden_state[0], atol=1e-6, rtol=0)
        for layer, state in enumerate(batch.final_states):
            torch.testing.assert_close(state[1], alone[1].final_states[layer][0], atol=1e-6, rtol=0)
        model.logits(batch.last_hidden_state).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # A joint bidirectional layer scans the backward direction time-reversed: there the pads come first, before any
    # state exists.
    tagger = RNNLMForTokenClassification(make_config("mingru", bidirectional=True, num_labels=2)).train()
    padded = torch.cat([long, torch.cat([short, pad], 1)])
    labels = torch.where(padded != 0, padded % 2, -100)
    tagger(padded, attention_mask=(padded != 0).long(), labels=labels).loss.backward()
    for name, param in tagger.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_weight_drop_masks_the_gate_input_weights():
    """No W_hh: DropConnect falls on W_ih (`weight_drop_on`), one mask per forward; dropped entries get no gradient."""
    model = RNNLMForCausalLM(make_config("mingru", weight_drop=0.5)).train()
    cell = model.model.layers[0].rnn
    x = torch.randn(2, 5, 32)
    torch.manual_seed(1)
    output, _ = model.model.layers[0](x)
    torch.manual_seed(1)
    dropped = nn.functional.dropout(cell.weight_ih_l0, 0.5, training=True)
    reference = MinGRU(32, 32)
    reference.load_state_dict({**cell.state_dict(), "weight_ih_l0": dropped.detach()})
    torch.testing.assert_close(output, reference(x)[0], atol=1e-6, rtol=0)
    output.sum().backward()
    assert torch.all(cell.weight_ih_l0.grad[dropped == 0] == 0) and cell.weight_ih_l0.grad.abs().sum() > 0
    model.eval()
    torch.testing.assert_close(model.model.layers[0](x)[0], MinGRU.forward(cell, x)[0])  # none in eval


@pytest.mark.parametrize("head", [RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_bidirectional_heads_learn_a_task_that_needs_the_right_context(head):
    """Each label is the next token's parity (tagger) or the first token's (classifier, pooled from the last
    token): only the backward direction, reading right to left, can see it. Both heads learn it."""
    torch.manual_seed(0)
    config = make_config("mingru", bidirectional=True, num_labels=2, classifier_pooling="last")
    model = head(config).train()
    input_ids = torch.randint(3, 99, (32, 8))
    if head is RNNLMForTokenClassification:
        labels = torch.cat([input_ids[:, 1:] % 2, torch.full((32, 1), -100)], 1)
    else:
        labels = input_ids[:, 0] % 2
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model(input_ids, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    predictions = model(input_ids).logits.argmax(-1)
    real = labels != -100
    assert (predictions[real] == labels[real]).float().mean() > 0.95


def test_config_names_the_cell():
    config = RNNLMConfig(cell_type="mingru")
    assert config.num_states == 1 and config.cell.name == "minGRU" and config.cell.weight_drop_on == "weight_ih"


def test_model_card_names_and_cites_the_cell(tmp_path):
    from rnn_lm_hf.model_card import write_model_card

    RNNLMForCausalLM(make_config("mingru")).save_pretrained(tmp_path)
    (tmp_path / "all_results.json").write_text('{"eval_loss": 2.0, "eval_perplexity": 7.389}')  # plain Trainer's
    text = write_model_card(tmp_path, dataset="tiny").read_text()
    assert "minGRU" in text and "@article{feng2024were" in text
    assert "@article{hochreiter1997long" not in text  # each cell cites its own paper
