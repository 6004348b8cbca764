"""generate(): cached == uncached for every decoding mode, O(1) steps, padding, continuation, clear refusals."""

import logging

import pytest
import torch
import transformers

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.modeling_rnn_lm import CACHE_FIELD
from tests.conftest import cache_of, make_config


def prompt(batch=2, seq_len=5):
    return torch.randint(3, 99, (batch, seq_len))


@pytest.fixture
def lm(tiny_config):
    return RNNLMForCausalLM(tiny_config).eval()


@pytest.mark.parametrize(
    "mode",
    [
        {"do_sample": False},
        {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9},
        {"do_sample": False, "num_beams": 3, "num_return_sequences": 2},
    ],
    ids=["greedy", "sampling", "beam"],
)
def test_generate_with_and_without_cache_is_identical(lm, mode):
    input_ids = prompt()
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        outputs.append(lm.generate(input_ids, max_new_tokens=10, use_cache=use_cache, pad_token_id=0, **mode))
    assert outputs[0].shape[0] == 2 * mode.get("num_return_sequences", 1)
    assert torch.equal(outputs[0], outputs[1])


def test_greedy_equals_a_manual_argmax_loop(lm):
    input_ids = prompt(batch=1)
    generated = lm.generate(input_ids, max_new_tokens=8, do_sample=False, eos_token_id=None)
    manual = input_ids
    for _ in range(8):
        next_token = lm(manual).logits[:, -1].argmax(-1, keepdim=True)
        manual = torch.cat([manual, next_token], 1)
    assert torch.equal(generated, manual)


def test_each_new_token_costs_one_recurrent_step(lm):
    seen = []
    lm.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    lm.generate(prompt(batch=1, seq_len=9), max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert seen == [9, 1, 1, 1, 1, 1]  # prefill once, then one token per step: never the prefix again


def test_left_padded_batch_generates_like_each_prompt_alone(lm):
    short, long = prompt(batch=1, seq_len=3), prompt(batch=1, seq_len=6)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6])
    together = lm.generate(
        batch, attention_mask=mask, max_new_tokens=7, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    alone_short = lm.generate(short, max_new_tokens=7, do_sample=False, eos_token_id=None)
    alone_long = lm.generate(long, max_new_tokens=7, do_sample=False, eos_token_id=None)
    assert torch.equal(together[0, 3:], alone_short[0])
    assert torch.equal(together[1], alone_long[0])


def assert_same_state(cache, reference):
    """Two caches that have read the same text: the same count and (up to float error) the same states."""
    assert cache.get_seq_length() == reference.get_seq_length()
    for layer, reference_layer in zip(cache.layers, reference.layers):
        torch.testing.assert_close(layer.recurrent_states[0], reference_layer.recurrent_states[0])


@pytest.mark.parametrize("usage", ["whole sequence", "last token"])
def test_continue_generation_from_the_returned_cache(lm, usage):
    """The documented usage on every supported transformers release: the whole sequence so far with the returned
    cache, which read all of it but the last generated token. Passing only that token (transformers 5.24's usage)
    works as well: a prompt no longer than what the cache read holds only new tokens."""
    input_ids = prompt(batch=1)
    kwargs = {"do_sample": False, "eos_token_id": None, "return_dict_in_generate": True}
    at_once = lm.generate(input_ids, max_new_tokens=10, **kwargs)
    first = lm.generate(input_ids, max_new_tokens=5, **kwargs)
    assert cache_of(first).get_seq_length() == 5 + 4
    continue_from = first.sequences if usage == "whole sequence" else first.sequences[:, -1:]
    rest = lm.generate(continue_from, **{CACHE_FIELD: cache_of(first)}, max_new_tokens=5, **kwargs)
    assert torch.equal(rest.sequences[:, : continue_from.shape[1]], continue_from)
    assert torch.equal(torch.cat([first.sequences, rest.sequences[:, continue_from.shape[1] :]], 1), at_once.sequences)
    assert_same_state(cache_of(rest), cache_of(at_once))  # each token read once: nothing read again or skipped


def test_continue_a_left_padded_batch_with_new_text(lm):
    """The whole sequence so far plus new tokens, with its mask: the cache reads only what it has not read, so the
    result is what generating from the whole text at once gives."""
    short, long = prompt(batch=1, seq_len=3), prompt(batch=1, seq_len=6)
    input_ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6])
    kwargs = {"do_sample": False, "eos_token_id": None, "pad_token_id": 0, "return_dict_in_generate": True}
    first = lm.generate(input_ids, attention_mask=mask, max_new_tokens=4, **kwargs)
    sequences = torch.cat([first.sequences, prompt(batch=2, seq_len=3)], 1)  # a user's next words after each text
    mask = torch.cat([mask, torch.ones(2, 4 + 3, dtype=torch.long)], 1)
    continued = lm.generate(
        sequences, attention_mask=mask, **{CACHE_FIELD: cache_of(first)}, max_new_tokens=5, **kwargs
    )
    at_once = lm.generate(sequences, attention_mask=mask, max_new_tokens=5, **kwargs)
    assert torch.equal(continued.sequences, at_once.sequences)
    with pytest.raises(ValueError, match=r"whole sequence so far \(result.sequences\) with its whole mask"):
        lm.generate(sequences[:, -3:], attention_mask=mask, **{CACHE_FIELD: cache_of(first)}, **kwargs)
    # The cache counts positions, padding included, as transformers' caches do.
    assert_same_state(cache_of(continued), cache_of(at_once))


def test_stops_at_eos_and_respects_max_new_tokens(lm):
    input_ids = prompt(batch=1)
    free = lm.generate(input_ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
    eos = int(free[0, 5 + 3])  # the 4th generated token, used as EOS
    stopped = lm.generate(input_ids, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    first_hit = (free[0, 5:] == eos).nonzero()[0].item()
    assert stopped.shape[1] == 5 + first_hit + 1 and stopped[0, -1] == eos
    assert free.shape[1] == 5 + 12


def test_hidden_states_and_scores_per_step(lm):
    out = lm.generate(
        prompt(batch=1),
        max_new_tokens=3,
        do_sample=False,
        eos_token_id=None,
        return_dict_in_generate=True,
        output_hidden_states=True,
        output_scores=True,
    )
    assert len(out.hidden_states) == 3 and len(out.hidden_states[0]) == 3
    assert out.hidden_states[1][0].shape == (1, 1, 32) and len(out.scores) == 3


@pytest.fixture
def transformers_warnings():
    """The warnings transformers logs during a test, `warning_once` ones included (its loggers do not propagate)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    library_logger = transformers.utils.logging.get_logger()
    level = library_logger.level
    transformers.utils.logging.warning_once.cache_clear()  # a message logged before this test is logged again
    library_logger.setLevel(logging.WARNING)
    library_logger.addHandler(handler)
    yield records
    library_logger.removeHandler(handler)
    library_logger.setLevel(level)


def test_output_hidden_states_in_the_config_neither_warns_nor_is_ignored(tmp_path, transformers_warnings):
    """A model config with output_hidden_states=True made transformers warn "generation flags are not valid" when
    it built the model's generation config; generate() returns the per-step hidden states, as for its own models."""
    lm = RNNLMForCausalLM(make_config(output_hidden_states=True)).eval()
    lm.save_pretrained(tmp_path)
    for model in (lm, RNNLMForCausalLM.from_pretrained(tmp_path).eval()):
        out = model.generate(prompt(batch=1), max_new_tokens=3, do_sample=False, eos_token_id=None)
        assert len(out.hidden_states) == 3 and len(out.hidden_states[0]) == 3
    messages = [record.getMessage() for record in transformers_warnings]
    assert not [message for message in messages if "generation flags" in message], messages


def test_generate_from_inputs_embeds(lm):
    input_ids = prompt(batch=1)
    embeds = lm.get_input_embeddings()(input_ids)
    from_ids = lm.generate(input_ids, max_new_tokens=4, do_sample=False, eos_token_id=None)
    from_embeds = lm.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, eos_token_id=None)
    assert torch.equal(from_embeds, from_ids[:, 5:])


def test_unsupported_modes_fail_clearly():
    lm = RNNLMForCausalLM(make_config()).eval()
    with pytest.raises(ValueError, match="Assisted.*recurrent state cannot be rolled back"):
        lm.generate(prompt(), assistant_model=lm, max_new_tokens=2)
    with pytest.raises(ValueError, match="Contrastive search"):
        lm.generate(prompt(), penalty_alpha=0.6, top_k=4, max_new_tokens=2)
