"""Compiled decoding: the compileable cache (`RNNLMStaticCache`) generates exactly the eager cache's tokens, and the
one-token decoding step compiles as one graph (fullgraph=True: no graph break, no host sync).

generate() compiles its decoding step only on CUDA/XPU unless a `CompileConfig` says `_compile_all_devices`; these
tests use that flag to run the compiled path on the CPU. The `aot_eager` backend traces and functionalizes exactly
what inductor would get (same graph, same graph breaks) but runs the traced aten ops, so tokens must be bitwise equal;
inductor itself is checked in one slow test.
"""

import pytest
import torch
from transformers import CompileConfig

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.modeling_rnn_lm import CACHE_FIELD, RNNLMCache, RNNLMStaticCache
from tests.conftest import cache_of, make_config


MODES = {
    "greedy": {"do_sample": False},
    "sampling": {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9},
    "beam": {"do_sample": False, "num_beams": 3, "num_return_sequences": 2},
}


def compile_config(backend: str = "aot_eager") -> CompileConfig:
    config = CompileConfig(fullgraph=True, backend=backend, mode=None)
    config._compile_all_devices = True  # generate() compiles on CUDA/XPU only, unless told so
    return config


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def lm(tiny_config):
    return RNNLMForCausalLM(tiny_config).eval()


def left_padded_prompts(vocab_size: int = 99) -> tuple[torch.LongTensor, torch.LongTensor]:
    input_ids = torch.randint(3, vocab_size, (2, 6), generator=torch.Generator().manual_seed(7))
    attention_mask = torch.ones_like(input_ids)
    input_ids[0, :3], attention_mask[0, :3] = 0, 0  # the first prompt is 3 tokens shorter
    return input_ids, attention_mask


def generate(lm, mode: str, **kwargs) -> torch.LongTensor:
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(123)  # the same draws for every sampling run
    return lm.generate(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=8,
        pad_token_id=0,
        eos_token_id=None,
        **MODES[mode],
        **kwargs,
    )


@pytest.mark.parametrize("mode", MODES)
def test_static_cache_generates_the_eager_caches_tokens(lm, mode):
    eager = generate(lm, mode)
    static = generate(lm, mode, cache_implementation="static")
    assert torch.equal(static, eager)


@pytest.mark.parametrize("mode", ["greedy", "sampling"])
def test_compiled_decoding_generates_the_eager_caches_tokens(lm, mode):
    eager = generate(lm, mode)
    compiled = generate(lm, mode, cache_implementation="static", compile_config=compile_config())
    assert hasattr(lm, "_compiled_call")  # generate() did take the compiled path
    assert torch.equal(compiled, eager)


def test_beam_search_reorders_the_static_buffers_in_place(tiny_config):
    cache = RNNLMStaticCache(tiny_config)
    lm = RNNLMForCausalLM(tiny_config).eval()
    lm(torch.randint(3, 99, (3, 4)), cache=cache, use_cache=True)
    states = [layer.recurrent_states[0] for layer in cache.layers]
    before = [state.clone() for state in states]
    addresses = [state.data_ptr() for state in states]
    beam_idx = torch.tensor([2, 0, 0])
    cache.reorder_cache(beam_idx)
    for layer, old, address in zip(cache.layers, before, addresses):
        assert layer.recurrent_states[0].data_ptr() == address  # a CUDA graph replays on these very buffers
        assert torch.equal(layer.recurrent_states[0], old[beam_idx])


def test_decoding_step_compiles_as_one_graph_and_never_recompiles(lm):
    """torch.compile(fullgraph=True) of the model call generate() makes per token: no graph break (a host sync such
    as `.item()` or a branch on a tensor value would be one), the same kernels as eager, and one graph for all steps."""
    input_ids, attention_mask = left_padded_prompts()
    eager_cache, compiled_cache = RNNLMCache(lm.config), RNNLMStaticCache(lm.config)
    with torch.no_grad():
        eager = lm(input_ids, attention_mask=attention_mask, cache=eager_cache, use_cache=True)
        lm(input_ids, attention_mask=attention_mask, cache=compiled_cache, use_cache=True)  # prefill stays eager
        step = torch.compile(lm, fullgraph=True, backend="aot_eager")
        token = eager.logits[:, -1:].argmax(-1)  # (batch, 1)
        with torch._dynamo.config.patch(allow_rnn=True):
            for i in range(4):
                with torch._dynamo.config.patch(error_on_recompile=i > 0):
                    compiled = step(input_ids=token, **{CACHE_FIELD: compiled_cache}, use_cache=True)
                eager = lm(input_ids=token, **{CACHE_FIELD: eager_cache}, use_cache=True)
                assert torch.equal(compiled.logits, eager.logits)
                token = eager.logits[:, -1:].argmax(-1)
    assert cache_of(compiled) is compiled_cache
    for compiled_layer, eager_layer in zip(compiled_cache.layers, eager_cache.layers):
        assert torch.equal(compiled_layer.recurrent_states[0], eager_layer.recurrent_states[0])
    assert compiled_cache.get_seq_length() == eager_cache.get_seq_length() == 6 + 4


def test_generate_stays_eager_on_cpu_by_default():
    lm = RNNLMForCausalLM(make_config()).eval()
    out = lm.generate(torch.randint(3, 99, (1, 4)), max_new_tokens=3, cache_implementation="static")
    assert out.shape == (1, 7) and not hasattr(lm, "_compiled_call")
    lm.generate(torch.randint(3, 99, (1, 4)), max_new_tokens=3)
    assert not hasattr(lm, "_compiled_call")


@pytest.mark.parametrize("usage", ["whole sequence", "last token"])
def test_static_cache_continues_like_the_eager_cache(usage):
    """The returned static cache holds the state and the token count; generation continues from it, given the whole
    sequence so far (every transformers release) or only the last generated token."""
    lm = RNNLMForCausalLM(make_config()).eval()
    input_ids = torch.randint(3, 99, (1, 5))
    kwargs = {"do_sample": False, "eos_token_id": None, "return_dict_in_generate": True}
    static = lm.generate(input_ids, max_new_tokens=4, cache_implementation="static", **kwargs)
    eager = lm.generate(input_ids, max_new_tokens=4, **kwargs)
    assert isinstance(cache_of(static), RNNLMStaticCache) and torch.equal(static.sequences, eager.sequences)
    assert cache_of(static).get_seq_length() == cache_of(eager).get_seq_length() == 5 + 3
    continue_from = static.sequences if usage == "whole sequence" else static.sequences[:, -1:]
    rest = [
        lm.generate(continue_from, **{CACHE_FIELD: cache_of(out)}, max_new_tokens=3, **kwargs)
        for out in (static, eager)
    ]
    assert torch.equal(rest[0].sequences, rest[1].sequences)
    at_once = lm.generate(input_ids, max_new_tokens=4 + 3, **kwargs).sequences
    assert torch.equal(torch.cat([static.sequences, rest[0].sequences[:, continue_from.shape[1] :]], 1), at_once)
    assert cache_of(rest[0]).get_seq_length() == 5 + 4 + 2  # every token read once


@pytest.mark.slow
@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_inductor_compiled_decoding_generates_the_eager_tokens(cell_type):
    """The real backend (C++ code generation on the CPU, about 20-40 s per cell type)."""
    lm = RNNLMForCausalLM(make_config(cell_type)).eval()
    eager = generate(lm, "greedy")
    compiled = generate(lm, "greedy", cache_implementation="static", compile_config=compile_config("inductor"))
    assert torch.equal(compiled, eager)
