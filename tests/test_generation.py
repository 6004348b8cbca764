"""generate(): cached == uncached for every decoding mode, O(1) steps, padding, continuation, clear refusals."""

import pytest
import torch

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


def test_continue_generation_from_the_returned_cache(lm):
    input_ids = prompt(batch=1)
    at_once = lm.generate(input_ids, max_new_tokens=10, do_sample=False, eos_token_id=None)
    first = lm.generate(input_ids, max_new_tokens=5, do_sample=False, eos_token_id=None, return_dict_in_generate=True)
    # The cache has consumed every token but the last generated one. transformers 5.24+ feeds a recurrent cache
    # just the new tokens; older releases take the whole sequence and cut off the cache's length themselves.
    last_token = first.sequences[:, -1:]
    continue_from = last_token if CACHE_FIELD == "cache" else first.sequences
    rest = lm.generate(
        continue_from, **{CACHE_FIELD: cache_of(first)}, max_new_tokens=5, do_sample=False, eos_token_id=None
    )
    rest = rest[:, -6:]
    assert torch.equal(torch.cat([first.sequences, rest[:, 1:]], 1), at_once)


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
