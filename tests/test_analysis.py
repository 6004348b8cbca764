"""`rnn_lm_hf.analysis` and `rnn_lm_hf.minimal_pairs`: gradient flow against hand-written backprop, geometric decay
and growth in a vanilla RNN, minimal-pair scores against direct log-probabilities, the pair templates, and the CLI."""

import json
from collections import Counter

import pytest
import torch

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.analysis import gradient_flow, main, recurrent_spectral_norms, unrolled_forward
from rnn_lm_hf.demo_corpus import PLURAL_NOUNS, PLURAL_VERBS, SINGULAR_NOUNS, SINGULAR_VERBS, demo_vocabulary
from rnn_lm_hf.minimal_pairs import (
    CONSTRUCTIONS,
    PTB_LEXICON,
    generate_agreement_pairs,
    read_pairs,
    score_pairs,
    summarize,
    write_pairs,
)
from rnn_lm_hf.tokenization import train_tokenizer, word_tokenizer_from_vocab
from tests.conftest import make_config


def test_gradient_norms_equal_hand_backprop_on_a_tiny_rnn():
    # h_t = tanh(W_ih e_t + W_hh h_{t-1} + b), logits_t = W_out h_t + c, J_t = -log softmax(logits_t)[x_{t+1}]:
    # dJ_t/dh_t = W_out^T (p_t - y_t), dJ_t/dh_j = W_hh^T diag(1 - h_{j+1}^2) dJ_t/dh_{j+1},
    # dJ_t/de_j = W_ih^T diag(1 - h_j^2) dJ_t/dh_j.
    config = make_config("rnn", vocab_size=7, hidden_size=3, num_hidden_layers=1, tie_word_embeddings=False)
    model = RNNLMForCausalLM(config).eval()
    rnn = model.model.layers[0].rnn
    w_ih, w_hh, b = rnn.weight_ih_l0.detach(), rnn.weight_hh_l0.detach(), (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach()
    input_ids = torch.tensor([[4, 5, 6, 4, 5, 2], [6, 6, 5, 4, 3, 5]])
    batch, length = input_ids.shape
    with torch.no_grad():
        e = model.model.embeddings(input_ids)  # (batch, length, 3)
        h, previous = [], torch.zeros(batch, 3)
        for t in range(length):
            previous = torch.tanh(e[:, t] @ w_ih.T + previous @ w_hh.T + b)
            h.append(previous)
        sums_h, sums_e, counts = torch.zeros(length - 1), torch.zeros(length - 1), torch.zeros(length - 1)
        for t in range(length - 1):
            p = model.lm_head(h[t]).softmax(-1)
            g = (p - torch.nn.functional.one_hot(input_ids[:, t + 1], 7).float()) @ model.lm_head.weight  # dJ_t/dh_t
            for j in range(t, -1, -1):
                g_e = (g * (1 - h[j] ** 2)) @ w_ih  # dJ_t/de_j
                sums_h[t - j] += g.norm(dim=-1).mean()
                sums_e[t - j] += g_e.norm(dim=-1).mean()
                counts[t - j] += 1
                g = (g * (1 - h[j] ** 2)) @ w_hh  # dJ_t/dh_{j-1}
    flow = gradient_flow(model, input_ids)
    assert flow["distance"] == list(range(length - 1))
    assert flow["positions_per_distance"] == counts.long().tolist() == [5, 4, 3, 2, 1]
    torch.testing.assert_close(
        torch.tensor(flow["layers"][0], dtype=torch.float64), (sums_h / counts).double(), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        torch.tensor(flow["embeddings"], dtype=torch.float64), (sums_e / counts).double(), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_the_unrolled_forward_is_the_model_forward(cell_type):
    model = RNNLMForCausalLM(make_config(cell_type)).eval()
    input_ids = torch.randint(4, 99, (3, 9))
    logits, embeds, states = unrolled_forward(model, input_ids)
    torch.testing.assert_close(logits, model(input_ids).logits, rtol=1e-5, atol=1e-5)
    assert embeds.requires_grad and embeds.is_leaf
    assert [len(layer) for layer in states] == [9, 9] and states[1][4].shape == (3, 32)
    flow = gradient_flow(model, input_ids)
    assert all(v > 0 for v in flow["embeddings"]) and len(flow["layers"]) == 2


def scaled_linear_rnn(scale: float) -> RNNLMForCausalLM:
    """A vanilla RNN whose W_hh is `scale` times an orthogonal matrix, with tiny inputs so tanh stays linear: the
    Jacobian dh_t/dh_{t-1} is then ~ scale * Q and ||dJ_t/dh_j|| ~ scale^(t-j) ||dJ_t/dh_t||."""
    model = RNNLMForCausalLM(make_config("rnn", hidden_size=16, num_hidden_layers=1)).eval()
    rnn = model.model.layers[0].rnn
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(scale * torch.linalg.qr(torch.randn(16, 16))[0])
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
        model.model.embeddings.weight.mul_(1e-3)
    return model


@pytest.mark.parametrize("scale", [0.6, 1.5])
def test_vanilla_rnn_gradient_decays_below_one_and_grows_above_one(scale):
    model = scaled_linear_rnn(scale)
    flow = gradient_flow(model, torch.randint(4, 99, (4, 12)))
    norms = flow["layers"][0]
    steps = [later / earlier for earlier, later in zip(norms, norms[1:])]
    # Averages over different positions per distance, so each step is the scale only roughly.
    assert all(step < 1 for step in steps) if scale < 1 else all(step > 1 for step in steps)
    assert norms[8] / norms[0] == pytest.approx(scale**8, rel=0.3)
    assert recurrent_spectral_norms(model)[0]["sigma_max"] == pytest.approx(scale, rel=1e-4)


def test_spectral_norms_per_gate():
    model = RNNLMForCausalLM(make_config("lstm", num_hidden_layers=2))
    norms = recurrent_spectral_norms(model)
    weight = model.model.layers[1].rnn.weight_hh_l0.detach()
    assert norms[1]["sigma_max"] == pytest.approx(float(torch.linalg.svdvals(weight)[0]), rel=1e-5)
    assert list(norms[1]["per_gate"]) == ["i", "f", "g", "o"]
    assert norms[1]["per_gate"]["f"] == pytest.approx(float(torch.linalg.svdvals(weight[32:64])[0]), rel=1e-5)


# ----- minimal pairs -----


@pytest.fixture(scope="module")
def char_tokenizer():
    """One token per character: every word is several pieces."""
    return train_tokenizer([" ".join(demo_vocabulary())], kind="char")


def direct_log_prob(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | <eos> context), one unpadded row, summed over the continuation's tokens."""
    text = f"{context} {continuation}" if context else continuation
    ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    start = 1 + (len(tokenizer(context, add_special_tokens=False)["input_ids"]) if context else 0)
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(float(log_probs[i - 1, ids[i]]) for i in range(start, len(ids)))


@pytest.mark.parametrize("kind", ["prefix", "sentence"])
def test_pair_scores_equal_direct_log_probs_with_multi_piece_words(char_tokenizer, kind):
    model = RNNLMForCausalLM(make_config("gru", vocab_size=len(char_tokenizer))).eval()
    pairs = generate_agreement_pairs(6, seed=1, kind=kind)
    scores = score_pairs(model, char_tokenizer, pairs, batch_size=4)  # several lengths per batch: padding
    for pair, (good, bad) in zip(pairs, scores):
        if kind == "prefix":
            assert len(char_tokenizer(" " + pair["good"], add_special_tokens=False)["input_ids"]) > 2
            expected = [direct_log_prob(model, char_tokenizer, pair["prefix"], pair[k]) for k in ("good", "bad")]
        else:
            expected = [direct_log_prob(model, char_tokenizer, "", pair[k]) for k in ("sentence_good", "sentence_bad")]
        assert (good, bad) == pytest.approx(expected, abs=1e-4)
    summary = summarize(pairs, scores)
    assert summary["accuracy"] == sum(good > bad for good, bad in scores) / 6 and summary["num_pairs"] == 6


@pytest.mark.parametrize("lexicon", ["demo", "ptb"])
@pytest.mark.parametrize("kind", ["prefix", "sentence"])
def test_generated_pairs_differ_only_in_the_verb(lexicon, kind):
    pairs = generate_agreement_pairs(400, seed=3, lexicon=lexicon, kind=kind)
    assert pairs == generate_agreement_pairs(400, seed=3, lexicon=lexicon, kind=kind)
    assert Counter(p["construction"] for p in pairs) == dict.fromkeys(CONSTRUCTIONS, 100)
    singular_nouns = SINGULAR_NOUNS | {s for s, _ in PTB_LEXICON.animate_nouns + PTB_LEXICON.inanimate_nouns}
    plural_nouns = PLURAL_NOUNS | {p for _, p in PTB_LEXICON.animate_nouns + PTB_LEXICON.inanimate_nouns}
    for pair in pairs:
        good, bad = (pair["good"], pair["bad"]) if kind == "prefix" else (pair["sentence_good"], pair["sentence_bad"])
        if kind == "prefix":
            words, good_words, bad_words = pair["prefix"].split(), [good], [bad]
        else:
            good_words, bad_words = good.split(), bad.split()
            diff = [i for i, (g, b) in enumerate(zip(good_words, bad_words)) if g != b]
            assert len(good_words) == len(bad_words) and len(diff) == 1, pair
            words, good_words, bad_words = good_words[: diff[0]], good_words[diff[0] :][:1], bad_words[diff[0] :][:1]
        head_plural = words[1] in plural_nouns
        assert pair["number"] == ("plural" if head_plural else "singular")
        assert good_words[0] != bad_words[0]
        if lexicon == "demo":
            assert good_words[0] in (PLURAL_VERBS if head_plural else SINGULAR_VERBS)
        between = [w for w in words[2:] if w in singular_nouns | plural_nouns]
        assert pair["distance"] == len(words) - 1 and pair["intervening_nouns"] == len(between)
        assert pair["attractors"] == sum((w in plural_nouns) != head_plural for w in between)
    assert {p["attractors"] for p in pairs} == {0, 1, 2}


def test_pairs_only_attractors_when_asked():
    pairs = generate_agreement_pairs(200, seed=0, p_attractor=1.0)
    assert all(p["attractors"] == p["intervening_nouns"] for p in pairs)


def test_summary_breaks_down_by_every_other_field():
    pairs = [
        {"prefix": "a", "good": "b", "bad": "c", "distance": d, "kind": k} for d, k in [(1, "x"), (1, "y"), (2, "y")]
    ]
    summary = summarize(pairs, [(-1.0, -2.0), (-3.0, -2.0), (-1.0, -1.5)])
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["by"]["distance"] == {"1": {"accuracy": 0.5, "count": 2}, "2": {"accuracy": 1.0, "count": 1}}
    assert summary["by"]["kind"]["y"] == {"accuracy": 0.5, "count": 2}


def test_read_pairs_rejects_bad_lines(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prefix": "the dog", "good": "is", "bad": "are"}\n{"sentence_good": "x"}\n')
    with pytest.raises(ValueError, match=r"line 2: sentence_good, sentence_bad must all be non-empty strings"):
        read_pairs(path)
    path.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="a pair needs the fields prefix, good, bad or sentence_good"):
        read_pairs(path)
    with pytest.raises(FileNotFoundError, match="No pairs file"):
        read_pairs(tmp_path / "missing.jsonl")


# ----- command line -----


@pytest.fixture
def saved_model(tmp_path):
    tokenizer = word_tokenizer_from_vocab(demo_vocabulary())
    model = RNNLMForCausalLM(make_config("lstm", vocab_size=len(tokenizer), num_hidden_layers=1))
    model.save_pretrained(tmp_path / "lstm")
    tokenizer.save_pretrained(tmp_path / "lstm")
    text = tmp_path / "text.txt"
    text.write_text("the writer of the books is famous .\nthe keys to the cabinet are heavy .\n" * 20)
    return tmp_path / "lstm", text


def test_cli_writes_json_and_png(saved_model, tmp_path):
    folder, text = saved_model
    out = tmp_path / "out"
    argv = ["gradients", f"trained={folder}", f"init:{folder}", "--file", str(text), "--output_dir", str(out)]
    assert main([*argv, "--max_length", "12", "--num_rows", "4"]) == 0
    result = json.loads((out / "gradients.json").read_text())
    assert list(result["models"]) == ["trained", "lstm (init)"]
    assert len(result["models"]["trained"]["gradients"]["layers"][0]) == 11
    assert (out / "gradients.png").stat().st_size > 1000
    pairs = tmp_path / "pairs.jsonl"
    assert main(["pairs", "--output", str(pairs), "--n", "40", "--kind", "sentence"]) == 0
    assert len(read_pairs(pairs)) == 40
    assert main(["agreement", str(folder), "--pairs", str(pairs), "--output_dir", str(out)]) == 0
    summary = json.loads((out / "agreement.json").read_text())
    assert 0 <= summary["accuracy"] <= 1 and summary["num_pairs"] == 40
    assert set(summary["by"]) == {"attractors", "construction", "distance", "intervening_nouns", "number"}
    assert (out / "agreement.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "pair",
    [
        {"prefix": "the writer of the books", "good": "is", "bad": "are"},
        {"sentence_good": "the keys to the cabinet are heavy .", "sentence_bad": "the keys to the cabinet is heavy ."},
    ],
)
def test_agreement_with_only_the_documented_keys(saved_model, tmp_path, pair):
    """Pairs with nothing but their texts (the documented formats) have no field to break down by: the summary and
    the plot show the overall accuracy alone (the plot used to divide by zero panels)."""
    folder, _ = saved_model
    write_pairs([pair] * 3, tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    assert main(["agreement", str(folder), "--pairs", str(tmp_path / "pairs.jsonl"), "--output_dir", str(out)]) == 0
    summary = json.loads((out / "agreement.json").read_text())
    assert summary["num_pairs"] == 3 and summary["by"] == {} and summary["accuracy"] in (0.0, 1.0)
    assert (out / "agreement.png").stat().st_size > 1000


def test_cli_bad_input_is_one_clear_error(saved_model, tmp_path):
    folder, text = saved_model
    with pytest.raises(FileNotFoundError, match="No saved model in"):
        main(["agreement", str(tmp_path / "nope"), "--pairs", str(text), "--output_dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="No text file"):
        main(["gradients", str(folder), "--file", str(tmp_path / "none.txt"), "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="fewer than one row"):
        main(["gradients", str(folder), "--file", str(text), "--output_dir", str(tmp_path), "--max_length", "10000"])
    write_pairs([{"prefix": "the dog", "good": "is"}], tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="prefix, good, bad must all be non-empty"):
        main(["agreement", str(folder), "--pairs", str(tmp_path / "bad.jsonl"), "--output_dir", str(tmp_path)])


def test_the_recorded_experiment_trains_the_three_cells_the_same_way():
    from tests.conftest import load_bench_script

    theory = load_bench_script("theory")
    runs = theory.jobs()
    for corpus in ("demo", "ptb") if theory.PTB.is_dir() else ("demo",):
        arguments = {cell: runs[f"{corpus}_{cell}"] for cell in ("rnn", "lstm", "gru")}
        # Identical but for the cell type in --config_overrides.
        assert arguments["rnn"] == [a.replace("cell_type=lstm", "cell_type=rnn") for a in arguments["lstm"]]
        assert arguments["rnn"] == [a.replace("cell_type=gru", "cell_type=rnn") for a in arguments["gru"]]
    clipped, unclipped = runs["explode_clip0.25"], runs["explode_clip0"]
    assert clipped[:-1] == unclipped[:-1] and (clipped[-2:], unclipped[-2:]) == (
        ["--max_grad_norm", "0.25"],
        ["--max_grad_norm", "0"],
    )


def test_a_model_that_reads_its_own_eos_gets_no_second_one(char_tokenizer):
    model = RNNLMForCausalLM(make_config("lstm", vocab_size=len(char_tokenizer), start_after_eos=True, eos_token_id=2))
    pair = generate_agreement_pairs(1, seed=0)[0]
    ((good, _),) = score_pairs(model.eval(), char_tokenizer, [pair])
    prefix = char_tokenizer(pair["prefix"], add_special_tokens=False)["input_ids"]
    ids = char_tokenizer(f"{pair['prefix']} {pair['good']}", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)  # the model starts after its own <eos>
    assert good == pytest.approx(sum(float(log_probs[i - 1, ids[i]]) for i in range(len(prefix), len(ids))), abs=1e-4)


@pytest.mark.parametrize("kind", ["prefix", "sentence"])
def test_a_context_is_read_but_not_scored(char_tokenizer, kind):
    model = RNNLMForCausalLM(make_config("gru", vocab_size=len(char_tokenizer))).eval()
    pair = generate_agreement_pairs(2, seed=4, kind=kind)[1]
    context = "the dog sleeps ."
    ((good, bad),) = score_pairs(model, char_tokenizer, [pair], context=context)
    if kind == "prefix":
        prefix = f"{context} {pair['prefix']}"
        expected = [direct_log_prob(model, char_tokenizer, prefix, pair[k]) for k in ("good", "bad")]
    else:
        expected = [
            direct_log_prob(model, char_tokenizer, context, pair[k]) for k in ("sentence_good", "sentence_bad")
        ]
    assert (good, bad) == pytest.approx(expected, abs=1e-4)
    if kind == "sentence":  # after a whole prefix of characters, a random GRU has forgotten the context
        assert (good, bad) != pytest.approx(score_pairs(model, char_tokenizer, [pair])[0], abs=1e-3)


def test_rnn_lm_analyze_runs_through_the_cli(saved_model, tmp_path, capsys):
    from rnn_lm_hf.cli import main as cli_main

    folder, _ = saved_model
    pairs = tmp_path / "pairs.jsonl"
    assert cli_main(["analyze", "pairs", "--output", str(pairs), "--n", "8"]) == 0
    assert cli_main(["analyze", "agreement", str(folder), "--pairs", str(pairs), "--output_dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "agreement.json").read_text())["num_pairs"] == 8
    assert cli_main(["analyze", "agreement", str(tmp_path / "nope"), "--pairs", str(pairs), "--output_dir", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: No saved model in")
