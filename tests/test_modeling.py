"""Forward-pass behaviour of the base model and the three heads (transformers' ModelTester checklist)."""

from contextlib import contextmanager, nullcontext

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, DynamicCache

from rnn_lm_hf import (
    RNNLMConfig,
    RNNLMForCausalLM,
    RNNLMForSequenceClassification,
    RNNLMForTokenClassification,
    RNNLMModel,
)
from rnn_lm_hf.modeling_rnn_lm import CACHE_FIELD
from tests.conftest import cache_of, make_config


ATOL = 1e-5
HEADS = [RNNLMModel, RNNLMForCausalLM, RNNLMForTokenClassification, RNNLMForSequenceClassification]


def ids(batch=2, seq_len=7, vocab=99):
    return torch.randint(3, vocab, (batch, seq_len))


@pytest.mark.parametrize("head", HEADS)
def test_heads_shapes_loss_and_backward(tiny_config, head):
    model = head(tiny_config)
    input_ids = ids()
    labels = {
        RNNLMModel: None,
        RNNLMForCausalLM: input_ids,
        RNNLMForTokenClassification: torch.randint(0, 2, (2, 7)),
        RNNLMForSequenceClassification: torch.tensor([0, 1]),
    }[head]
    out = model(input_ids, labels=labels) if labels is not None else model(input_ids)
    expected = {
        RNNLMModel: (2, 7, 32),
        RNNLMForCausalLM: (2, 7, 99),
        RNNLMForTokenClassification: (2, 7, 2),
        RNNLMForSequenceClassification: (2, 2),
    }[head]
    first = out.last_hidden_state if head is RNNLMModel else out.logits
    assert first.shape == expected
    if labels is not None:
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_state_equivalence_prefix_plus_steps(tiny_config):
    """Full forward == prefix forward + continuation from the returned cache, token by token and in chunks."""
    model = RNNLMForCausalLM(tiny_config).eval()
    input_ids = ids(seq_len=12)
    full = model(input_ids).logits
    for chunks in ([4, 1, 1, 1, 1, 1, 1, 1, 1], [5, 3, 4], [1] * 12):
        cache, pieces, start = None, [], 0
        for size in chunks:
            out = model(input_ids[:, start : start + size], cache=cache, use_cache=True)
            cache, start = cache_of(out), start + size
            pieces.append(out.logits)
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=ATOL, rtol=0)


def test_state_is_a_transformers_cache(tiny_config):
    model = RNNLMModel(tiny_config).eval()
    cache = cache_of(model(ids(batch=3), use_cache=True))
    assert isinstance(cache, DynamicCache) and all(cache.is_linear) and len(cache.layers) == 2
    state = cache.layers[0].recurrent_states[0]
    assert state.shape == (3, tiny_config.num_states, 32)  # batch first, constant size
    # Constant size: more tokens do not grow the state.
    cache = cache_of(model(ids(batch=3, seq_len=1), cache=cache))
    assert cache.layers[0].recurrent_states[0].shape == (3, tiny_config.num_states, 32)


def test_padding_inside_a_continued_chunk_does_not_enter_the_state(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval()
    input_ids = ids(batch=1, seq_len=8)
    prefix = model(input_ids[:, :5], use_cache=True)
    reference = model(input_ids[:, 5:], cache=cache_of(prefix), use_cache=True).logits[:, -1]
    prefix = model(input_ids[:, :5], use_cache=True)
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), input_ids[:, 5:]], 1)
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    out = model(padded, attention_mask=mask, cache=cache_of(prefix), use_cache=True).logits[:, -1]
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)


def test_a_fully_padded_row_keeps_its_state(tiny_config):
    model = RNNLMModel(tiny_config).eval()
    prefix = cache_of(model(ids(batch=2, seq_len=4), use_cache=True))
    before = [layer.recurrent_states[0].clone() for layer in prefix.layers]
    mask = torch.tensor([[1, 1], [0, 0]])
    after = cache_of(model(ids(batch=2, seq_len=2), attention_mask=mask, cache=prefix))
    for old, layer in zip(before, after.layers):
        torch.testing.assert_close(layer.recurrent_states[0][1], old[1])
        assert not torch.allclose(layer.recurrent_states[0][0], old[0])


def test_left_padding_leaves_last_token_logits_unchanged(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval()
    short, long = ids(batch=1, seq_len=4), ids(batch=1, seq_len=7)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    logits = model(batch, attention_mask=mask).logits
    torch.testing.assert_close(logits[0, 3:], model(short).logits[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[1], model(long).logits[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
def test_right_padding_invariance_bidirectional_heads(cell_type, pooling):
    config = make_config(cell_type, bidirectional=True, classifier_pooling=pooling, num_labels=3)
    short, long = ids(batch=1, seq_len=4), ids(batch=1, seq_len=7)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1), long])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7])

    tagger = RNNLMForTokenClassification(config).eval()
    tags = tagger(batch, attention_mask=mask).logits
    torch.testing.assert_close(tags[0, :4], tagger(short).logits[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(tags[1], tagger(long).logits[0], atol=ATOL, rtol=0)

    classifier = RNNLMForSequenceClassification(config).eval()
    scores = classifier(batch, attention_mask=mask).logits
    torch.testing.assert_close(scores[0], classifier(short).logits[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores[1], classifier(long).logits[0], atol=ATOL, rtol=0)
    # Without a mask, pad_token_id marks the padding (gpt2 semantics).
    torch.testing.assert_close(classifier(batch).logits, scores, atol=ATOL, rtol=0)


def test_last_pooling_uses_last_real_token_and_first_for_backward():
    config = make_config("gru", bidirectional=True, num_labels=2)
    model = RNNLMForSequenceClassification(config).eval()
    out = model.model(ids(batch=1, seq_len=5), output_hidden_states=True, output_final_states=True)
    last_layer = out.hidden_states[-1]  # (1, 5, 64): forward half then backward half
    pooled = model.pool(out, None)
    torch.testing.assert_close(pooled[0, :32], last_layer[0, -1, :32])
    torch.testing.assert_close(pooled[0, 32:], last_layer[0, 0, 32:])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_concat_pooling_is_last_max_mean_of_the_same_states(bidirectional):
    config = make_config("lstm", bidirectional=bidirectional, classifier_pooling="concat", num_labels=3)
    model = RNNLMForSequenceClassification(config).eval()
    assert model.score.in_features == config.pooled_size == 3 * config.output_size
    batch = torch.cat([torch.cat([ids(batch=1, seq_len=4), torch.zeros(1, 3, dtype=torch.long)], 1), ids(batch=1)])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7])
    outputs = model.model(batch, attention_mask=mask, output_final_states=True)
    concat = model.pool(outputs, mask)
    assert concat.shape == (2, 3 * config.output_size)
    parts = []
    for pooling in ("last", "max", "mean"):
        model.config.classifier_pooling = pooling
        parts.append(model.pool(outputs, mask))
    torch.testing.assert_close(concat, torch.cat(parts, -1), atol=0, rtol=0)
    # A single-pooling head on the same encoder weights gives the same features, with a 1x-wide score layer.
    single = RNNLMForSequenceClassification(make_config("lstm", bidirectional=bidirectional, classifier_pooling="max"))
    single.model.load_state_dict(model.model.state_dict())
    torch.testing.assert_close(single.pool(single.model(batch, attention_mask=mask), mask), parts[1])
    assert single.score.in_features == config.output_size


def test_concat_pooling_save_load_round_trip(tmp_path):
    config = make_config("gru", bidirectional=True, classifier_pooling="concat", num_labels=3)
    model = RNNLMForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.classifier_pooling == "concat" and loaded.score.in_features == 3 * config.output_size
    input_ids = ids()
    torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)


def test_hidden_states_every_layer_in_the_graph(tiny_config):
    model = RNNLMModel(tiny_config)
    out = model(ids(), output_hidden_states=True)
    assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
    assert all(h.shape == (2, 7, 32) for h in out.hidden_states)
    out.hidden_states[1].sum().backward()
    assert model.layers[0].rnn.weight_ih_l0.grad is not None
    assert model.layers[1].rnn.weight_ih_l0.grad is None  # layer 1 is downstream of hidden_states[1]
    # The config flag works too, and the padded path returns the same shapes.
    tiny_config.output_hidden_states = True
    padded = RNNLMModel(tiny_config)(ids(), attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1] * 7]))
    assert len(padded.hidden_states) == 3 and padded.hidden_states[2].shape == (2, 7, 32)


@pytest.mark.parametrize("source", ["argument", "config"])
@pytest.mark.parametrize("head", [RNNLMForCausalLM, RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_heads_return_hidden_states_from_the_argument_or_the_config(cell_type, head, source):
    """transformers' test_hidden_states_output: `output_hidden_states=True` or `config.output_hidden_states` gives
    the embeddings and every layer's outputs; an explicit False wins over the config."""
    model = head(make_config(cell_type, num_labels=3, output_hidden_states=source == "config")).eval()
    input_ids = ids()
    out = model(input_ids, output_hidden_states=True) if source == "argument" else model(input_ids)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 7, 32) for h in out.hidden_states)
    torch.testing.assert_close(out.hidden_states[-1], model.model(input_ids).last_hidden_state, atol=0, rtol=0)
    assert len(out.to_tuple()) == len(model(input_ids, output_hidden_states=True, return_dict=False))
    assert model(input_ids, output_hidden_states=False).hidden_states is None
    if head is RNNLMForCausalLM:  # the softmax's input, for activation regularisation
        assert out.last_hidden_state.shape == (2, 7, 32)
    else:  # a layer mix reads every layer, but returns them only when asked
        mixed = head(make_config(cell_type, num_labels=3, layer_mix=True)).eval()
        assert mixed(input_ids).hidden_states is None
        assert len(mixed(input_ids, output_hidden_states=True).hidden_states) == 3


def test_tuple_output_equals_dict_output(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval()
    input_ids = ids()
    as_dict = model(input_ids, labels=input_ids, output_hidden_states=True)
    as_tuple = model(input_ids, labels=input_ids, output_hidden_states=True, return_dict=False)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    # hidden states, then the dropped last-layer features (for AR); the cache sits in between
    assert len(as_tuple[-2]) == 3
    torch.testing.assert_close(as_tuple[-1], as_dict.last_hidden_state)


def test_causal_lm_loss_is_token_mean_cross_entropy_shifted_inside(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval()
    input_ids = ids()
    labels = input_ids.clone()
    labels[0, 4] = -100
    out = model(input_ids, labels=labels)
    logits, targets = out.logits[:, :-1].reshape(-1, 99), labels[:, 1:].reshape(-1)
    expected = nn.functional.cross_entropy(logits, targets, ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    # shift_labels are taken as the next tokens as they are (no second shift).
    shift_labels = torch.randint(0, 99, (2, 7))
    out = model(input_ids, labels=input_ids, shift_labels=shift_labels)
    torch.testing.assert_close(
        out.loss, nn.functional.cross_entropy(out.logits.reshape(-1, 99), shift_labels.reshape(-1))
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_items_in_batch", [None, 23])
@pytest.mark.parametrize("scale", [1.0, 3.0])  # 1: the backward hands over the forward's gradient as it is
def test_causal_lm_loss_equals_transformers_loss_and_its_gradient(dtype, num_items_in_batch, scale):
    """The head's loss (one exp per logit, the gradient made in the forward pass, no fp32 copy of bf16 logits) gives
    transformers' ForCausalLMLoss value and gradient, across row blocks, ignored targets and num_items_in_batch, also
    when the graph is kept and differentiated twice."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    from rnn_lm_hf.modeling_rnn_lm import LOSS_BLOCK_ELEMENTS, causal_lm_loss

    vocab = 1000
    seq_len = 3 * LOSS_BLOCK_ELEMENTS // vocab // 4 + 1  # several blocks, the last one partial
    logits = (torch.randn(4, seq_len, vocab) * 4).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (4, seq_len))
    labels[0, :5] = labels[2, -3:] = -100
    got = causal_lm_loss(logits, labels, vocab, num_items_in_batch=num_items_in_batch)
    (got_grad,) = torch.autograd.grad(scale * got, logits, retain_graph=True)
    (again,) = torch.autograd.grad(scale * got, logits)
    want = ForCausalLMLoss(logits, labels, vocab, num_items_in_batch=num_items_in_batch)
    (want_grad,) = torch.autograd.grad(scale * want, logits)
    torch.testing.assert_close(again, got_grad, rtol=0, atol=0)
    assert got.dtype == torch.float32 and got_grad.dtype == dtype
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # bf16: the gradient is rounded to bf16 once (transformers' path rounds it too, at the cast back)
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 8e-3, "atol": 1e-6}
    torch.testing.assert_close(got_grad.float(), want_grad.float(), **tolerance)
    assert got_grad[0, 3].abs().sum() == 0  # its target, the next label, is ignored
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(causal_lm_loss(logits, labels, vocab), ForCausalLMLoss(logits, labels, vocab))


def test_causal_lm_loss_is_exact_for_extreme_logits_and_can_be_replaced(tiny_config):
    from rnn_lm_hf.modeling_rnn_lm import causal_lm_loss

    # A target 200 nats below the best logit: exp underflows in fp32, the log-sum-exp form stays exact.
    logits = torch.zeros(1, 2, 5)
    logits[0, 0, 1], logits[0, 0, 3] = -200.0, 0.0
    loss = causal_lm_loss(logits, None, 5, shift_labels=torch.tensor([[1, -100]]))
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits[0, :1], torch.tensor([1])))
    assert torch.isfinite(loss) and loss > 200
    # As in transformers, setting `loss_function` on a model replaces it.
    model = RNNLMForCausalLM(tiny_config)
    assert model.loss_function is causal_lm_loss
    model.loss_function = lambda logits, labels, vocab_size, **kwargs: logits.sum() * 0
    assert model(ids(), labels=ids()).loss == 0


@pytest.mark.parametrize(
    ("problem_type", "labels"),
    [
        ("single_label_classification", torch.tensor([0, 2])),
        ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        ("regression", torch.tensor([[0.5, 1.0, -1.0], [0.0, 2.0, 1.0]])),
    ],
)
def test_sequence_problem_types(problem_type, labels):
    model = RNNLMForSequenceClassification(make_config(num_labels=3, problem_type=problem_type))
    out = model(ids(), labels=labels)
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)
    out.loss.backward()


def test_logits_to_keep(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval()
    input_ids = ids()
    full = model(input_ids).logits
    torch.testing.assert_close(model(input_ids, logits_to_keep=1).logits, full[:, -1:])
    torch.testing.assert_close(model(input_ids, logits_to_keep=torch.tensor([0, 3])).logits, full[:, [0, 3]])


def test_init_reinitialises_every_parameter_and_forget_bias(cell_type):
    config = make_config(cell_type)
    model = RNNLMForCausalLM(config)
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if "weight" in name:
            assert param.std() > 0, name
    if cell_type == "lstm":
        bias = model.model.layers[0].rnn.bias_ih_l0
        assert torch.all(bias[32:64] == 1.0) and torch.all(bias[:32] == 0.0)
    if cell_type == "rnn":  # orthogonal recurrent matrix
        weight_hh = model.model.layers[0].rnn.weight_hh_l0.detach()
        torch.testing.assert_close(weight_hh @ weight_hh.T, torch.eye(32), atol=1e-5, rtol=0)
    uniform = RNNLMForCausalLM(make_config(cell_type, init_recurrent_uniform=True, initializer_range=0.1))
    assert all(p.abs().max() <= 0.1 for p in uniform.parameters())


def test_tied_embeddings_and_projection():
    model = RNNLMForCausalLM(make_config())
    assert model.lm_head.weight is model.model.embeddings.weight
    projected = RNNLMForCausalLM(make_config(embedding_size=16))
    assert projected.projection.weight.shape == (16, 32)
    assert projected.lm_head.weight is projected.model.embeddings.weight
    untied = RNNLMForCausalLM(make_config(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.model.embeddings.weight


def test_resize_token_embeddings_keeps_tie(tiny_config):
    model = RNNLMForCausalLM(tiny_config)
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120
    assert model.lm_head.weight is model.model.embeddings.weight and model.lm_head.weight.shape == (120, 32)
    assert model.lm_head.bias.shape == (120,)
    assert model(torch.tensor([[119, 5]])).logits.shape == (1, 2, 120)


def test_out_of_range_ids_raise_a_clear_error(tiny_config):
    model = RNNLMForCausalLM(tiny_config)
    for bad in (99, -1):
        with pytest.raises(
            ValueError, match=rf"token id {bad}, outside the model's vocabulary \[0, 99\).*resize_token_embeddings"
        ):
            model(torch.tensor([[1, bad]]))


def test_legacy_cache_names_warn_and_work(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval()
    input_ids = ids(seq_len=6)
    cache = cache_of(model(input_ids[:, :3], use_cache=True))
    reference = model(input_ids[:, 3:], cache=cache).logits
    cache = cache_of(model(input_ids[:, :3], use_cache=True))
    # 5.24+ warns that the old name is deprecated; older releases use it as the name generate() passes.
    with pytest.warns(FutureWarning, match="past_key_values") if CACHE_FIELD == "cache" else nullcontext():
        legacy = model(input_ids[:, 3:], past_key_values=cache).logits
    torch.testing.assert_close(legacy, reference)


def test_bidirectional_encoder_has_no_cache():
    model = RNNLMModel(make_config(bidirectional=True)).eval()
    out = model(ids(), use_cache=True)
    assert cache_of(out) is None and out.last_hidden_state.shape == (2, 7, 64)
    assert out.final_states is None
    out = model(ids(), output_final_states=True)
    assert out.final_states[0].shape == (2, 4, 32)  # (h_fwd, h_bwd, c_fwd, c_bwd) for LSTM


def test_base_and_state_dict_loading(tmp_path, tiny_config):
    lm = RNNLMForCausalLM(tiny_config)
    # from_pretrained(None, config=..., state_dict=...)
    clone = RNNLMForCausalLM.from_pretrained(None, config=tiny_config, state_dict=lm.state_dict())
    for (name, a), b in zip(lm.state_dict().items(), clone.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    # A base model's weights load into a head (base_model_prefix) and the other way round.
    base = RNNLMModel(tiny_config)
    base.save_pretrained(tmp_path / "base")
    head = RNNLMForTokenClassification.from_pretrained(tmp_path / "base")
    torch.testing.assert_close(head.model.embeddings.weight, base.embeddings.weight)
    lm.save_pretrained(tmp_path / "lm")
    torch.testing.assert_close(
        RNNLMModel.from_pretrained(tmp_path / "lm").embeddings.weight, lm.model.embeddings.weight
    )


def test_ignore_mismatched_sizes(tmp_path):
    RNNLMForSequenceClassification(make_config(num_labels=2)).save_pretrained(tmp_path)
    model = RNNLMForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert model.score.weight.shape == (5, 32)


# Per head, the options whose modules each need their own case in `_init_weights`.
INIT_OPTIONS = {
    RNNLMForCausalLM: {"embedding_size": 16, "tie_word_embeddings": False},  # projection, untied softmax
    RNNLMForTokenClassification: {
        "bidirectional": True,
        "layer_mix": True,
        "head_rnn_size": 8,
        "char_cnn_filters": 4,
        "char_vocab_size": 10,
        "use_crf": True,
        "id2label": {0: "O", 1: "B-X", 2: "I-X"},
        "crf_scheme": "IOB2",
    },
    RNNLMForSequenceClassification: {
        "bidirectional": True,
        "separate_directions": True,
        "head_rnn_size": 8,
        "head_embedding_size": 4,
        "classifier_pooling": "concat",
    },
}


@contextmanager
def uninitialised_memory_is_nan():
    """torch.empty (what a weight missing from a checkpoint is made of) fills floats with NaN, ints with their max."""
    enabled, fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def gram_is_identity(weight: torch.Tensor) -> bool:
    """Orthogonal rows or columns (whichever are fewer), as `init.orthogonal_` makes them."""
    gram = weight.T @ weight if weight.shape[0] >= weight.shape[1] else weight @ weight.T
    return torch.allclose(gram, torch.eye(len(gram)), atol=1e-4)


@pytest.mark.parametrize("head", list(INIT_OPTIONS))
def test_meta_device_init_gives_missing_weights_a_fresh_init(cell_type, head):
    """from_pretrained builds the model on the meta device, then `_init_weights` must initialise every weight the
    checkpoint lacks (here: all of them) as a freshly built model has it: the same constants (zero biases, LSTM forget
    bias 1, CRF penalties, layer-mix gamma), the same spread, orthogonal recurrent weights. A tensor it skips keeps
    the uninitialised memory it was made of, NaN here."""
    config = make_config(cell_type, num_labels=3, **INIT_OPTIONS[head])
    with torch.device("meta"):
        assert all(tensor.is_meta for tensor in head(config).state_dict().values())
    with uninitialised_memory_is_nan():
        loaded = head.from_pretrained(None, config=config, state_dict={})
    fresh = [head(config) for _ in range(2)]  # two draws: what both share is a constant of the init
    tensors = [dict(model.named_parameters()) | dict(model.named_buffers()) for model in (loaded, *fresh)]
    assert tensors[0].keys() == tensors[1].keys()
    for name, value in tensors[0].items():
        first, second = tensors[1][name].detach(), tensors[2][name].detach()
        value = value.detach()
        assert value.shape == first.shape and value.dtype == first.dtype, name
        constant = first == second
        assert torch.equal(value[constant], first[constant]), name
        drawn, reference = value[~constant], torch.cat([first[~constant], second[~constant]])
        assert torch.isfinite(drawn).all(), name
        if drawn.numel() >= 16:  # the same law: the same range and spread
            assert drawn.abs().max() <= 1.5 * reference.abs().max(), name
            assert 0.5 < drawn.std() / reference.std() < 2, name
        if value.is_floating_point() and value.dim() == 2 and gram_is_identity(first):
            assert gram_is_identity(value), name


def test_dropout_only_in_training():
    model = RNNLMForCausalLM(make_config(dropout=0.5))
    input_ids = ids()
    model.eval()
    torch.testing.assert_close(model(input_ids).logits, model(input_ids).logits)
    model.train()
    assert not torch.allclose(model(input_ids).logits, model(input_ids).logits)


def test_config_is_the_single_source_of_truth():
    config = RNNLMConfig(
        vocab_size=30,
        hidden_size=12,
        embedding_size=6,
        num_hidden_layers=3,
        cell_type="rnn",
        rnn_nonlinearity="relu",
        tie_word_embeddings=False,
    )
    model = RNNLMForCausalLM(config)
    rnns = [layer.rnn for layer in model.model.layers]
    assert [type(r) for r in rnns] == [nn.RNN] * 3 and rnns[0].nonlinearity == "relu"
    assert (rnns[0].input_size, rnns[1].input_size, rnns[0].hidden_size) == (6, 12, 12)
    assert model.model.embeddings.weight.shape == (30, 6)


def test_feature_extraction_pipeline_batches(tmp_path, tiny_tokenizer):
    """Every output field is indexed by batch row, so the pipeline can split batched outputs (final states are
    opt-in)."""
    from transformers import pipeline

    model = RNNLMModel(make_config("lstm", vocab_size=len(tiny_tokenizer))).eval()
    extractor = pipeline("feature-extraction", model=model, tokenizer=tiny_tokenizer)
    texts = ["the writer of the books", "a cat", "the keys to the cabinet are here", "we", "sampling one token"]
    batched = extractor(texts, batch_size=4)
    for text, features in zip(texts, batched):
        alone = torch.tensor(extractor(text))  # (1, length, hidden)
        batched_row = torch.tensor(features)[:, -alone.shape[1] :]  # the batch is left-padded: zeros in front
        torch.testing.assert_close(batched_row, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_len", [0, 5])
def test_attention_mask_shorter_than_the_inputs_is_refused(tiny_config, mask_len):
    model = RNNLMForCausalLM(tiny_config).eval()
    with pytest.raises(ValueError, match=r"attention_mask.*\(2, 7\)"):
        model(ids(), attention_mask=torch.ones(2, mask_len, dtype=torch.long))


def test_labels_of_another_shape_or_class_are_refused(tiny_config):
    with pytest.raises(ValueError, match=r"`labels` has shape \(2, 6\) but the inputs need \(2, 7\)"):
        RNNLMForCausalLM(tiny_config)(ids(), labels=ids(seq_len=6))
    tagger = RNNLMForTokenClassification(make_config("gru", num_labels=3))
    with pytest.raises(ValueError, match="class id 3, outside"):
        tagger(ids(), labels=torch.full((2, 7), 3))
    classifier = RNNLMForSequenceClassification(make_config("gru", num_labels=2))
    with pytest.raises(ValueError, match=r"class id 5, outside \[0, num_labels=2\)"):
        classifier(ids(), labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        classifier(ids(), labels=torch.tensor([[0], [1]]))
