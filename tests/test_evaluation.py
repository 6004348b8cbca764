"""`rnn-lm evaluate`: text prepared as trained, dynamic evaluation and the neural cache against plain reference loops."""

import json
import math

import numpy as np
import pytest
import torch

from rnn_lm_hf import RNNLMForCausalLM, evaluation
from rnn_lm_hf.cli import main as cli_main
from rnn_lm_hf.modeling_rnn_lm import CACHE_FIELD
from tests.conftest import make_config


def tiny_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    return RNNLMForCausalLM(make_config("lstm", vocab_size=30, hidden_size=12, **overrides)).eval()


def stream(n=60, seed=0):
    return np.random.default_rng(seed).integers(3, 30, n)


def test_neural_cache_equals_a_reference_loop():
    model, tokens = tiny_lm(), stream()
    log_probs, states, targets = evaluation.score_stream(model, tokens, bptt=7)
    expected, window, theta, lam = 0.0, 9, 0.7, 0.25
    for t in range(len(tokens) - 1):
        # position t predicts tokens[t + 1] from one full forward over tokens[: t + 1]
        with torch.no_grad():
            out = model(torch.tensor(tokens[None, : t + 1]), output_hidden_states=True)
        h = out.hidden_states[-1][0]  # (t + 1, hidden)
        p = out.logits[0, -1].softmax(-1)[tokens[t + 1]]
        previous = range(max(0, t - window), t)
        if previous:
            weights = torch.softmax(torch.stack([theta * h[t] @ h[i] for i in previous]), 0)
            p_cache = sum(w for w, i in zip(weights, previous) if tokens[i + 1] == tokens[t + 1])
            p = (1 - lam) * p + lam * p_cache
        expected -= math.log(float(p))
    got = evaluation.neural_cache_nll(log_probs, states, targets, cache_size=window, theta=theta, lambdah=lam, chunk=8)
    assert got == pytest.approx(expected, rel=1e-5)
    assert evaluation.neural_cache_nll(log_probs, states, targets, lambdah=0.0) == pytest.approx(
        -float(log_probs.sum()), rel=1e-6
    )


def test_gradient_statistics_are_root_mean_square_gradients():
    model, tokens = tiny_lm(), stream(41)
    rms = evaluation.gradient_statistics(model, tokens, bptt=3, batch_size=4)
    columns = torch.tensor(tokens[:41])
    inputs, targets = columns[:-1].view(4, 10), columns[1:].view(4, 10)
    squares, count, cache = None, 0, None
    for start in range(0, 10, 3):
        model.zero_grad()
        out = model(inputs[:, start : start + 3], cache=cache, use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), targets[:, start : start + 3].flatten()).backward()
        grads = [p.grad.clone() ** 2 for p in model.parameters()]
        squares = grads if squares is None else [a + b for a, b in zip(squares, grads)]
        count += 1
    for got, square in zip(rms, squares):
        torch.testing.assert_close(got, (square / count).sqrt())


def test_dynamic_eval_equals_a_reference_loop_and_never_changes_the_model():
    model, tokens = tiny_lm(), stream(40)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rms = evaluation.gradient_statistics(model, stream(200, seed=1), bptt=5, batch_size=4)
    lr, decay, eps, bptt = 0.05, 0.1, 1e-3, 4
    got = evaluation.dynamic_eval_nll(model, tokens, rms, lr=lr, decay=decay, epsilon=eps, bptt=bptt)

    reference = tiny_lm()  # the same weights, updated by hand
    params = list(reference.parameters())
    start_weights = [p.detach().clone() for p in params]
    mean_rms = np.mean([float(r.mean()) for r in rms])
    expected, cache = 0.0, None
    for i in range(0, len(tokens) - 1, bptt):
        x = torch.tensor(tokens[None, i : min(i + bptt, len(tokens) - 1)])
        y = torch.tensor(tokens[None, i + 1 : i + 1 + x.shape[1]])
        reference.zero_grad()
        out = reference(x, cache=cache, use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        loss = torch.nn.functional.cross_entropy(out.logits[0], y[0])
        expected += loss.item() * y.shape[1]
        loss.backward()
        with torch.no_grad():
            for p, w0, r in zip(params, start_weights, rms):
                rate = torch.minimum(r / mean_rms, torch.full_like(r, 1 / decay))
                p += decay * rate * (w0 - p) - lr * p.grad / (r + eps)
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(-float(evaluation.score_stream(model, tokens)[0].sum()), rel=1e-4)  # it adapts
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)


def test_char_level_run_evaluates_as_trained_and_reports_adaptive_perplexities(tmp_path, capsys):
    """The README's character-level recipe (no <eos>, kept newlines): `rnn-lm evaluate` prepares the text as the run
    did and reproduces the run's own test perplexity; then the adaptive metrics, tuned on validation."""
    from rnn_lm_hf.training import train_clm

    lines = [f"{name}:\nwe sample one letter at a time, {name} said.\n\n" for name in ("ROMEO", "JULIET", "NURSE")]
    for split, repeat in (("train", 30), ("valid", 3), ("test", 3)):
        (tmp_path / f"{split}.txt").write_text("".join(lines * repeat))
    out = tmp_path / "char"
    metrics = train_clm.main(
        [
            "--train_file", str(tmp_path / "train.txt"), "--validation_file", str(tmp_path / "valid.txt"),
            "--test_file", str(tmp_path / "test.txt"), "--output_dir", str(out), "--do_train", "True",
            "--tokenizer_kind", "char", "--add_eos", "False", "--keep_linebreaks", "True",
            "--config_overrides", "hidden_size=24,num_hidden_layers=1", "--block_size", "20",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "1", "--max_steps", "30",
            "--learning_rate", "0.01", "--optim", "adamw_torch", "--report_to", "none", "--use_cpu", "True",
            "--disable_tqdm", "True", "--num_samples", "0", "--save_strategy", "no",
        ]
    )  # fmt: skip
    capsys.readouterr()
    assert cli_main(["evaluate", str(out), "--file", str(tmp_path / "test.txt")]) == 0
    static = json.loads(capsys.readouterr().out)
    assert static["perplexity"] == pytest.approx(metrics["test_perplexity"], rel=1e-5)
    assert static["tokens"] == metrics["test_tokens"]

    argv = ["evaluate", str(out), "--file", str(tmp_path / "test.txt"), "--dynamic_eval", "--neural_cache"]
    argv += ["--tune_file", str(tmp_path / "valid.txt"), "--cache_size", "400"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perplexity"] == pytest.approx(static["perplexity"])
    assert result["dynamic_eval_perplexity"] > 1 and result["neural_cache_perplexity"] > 1
    trials = result["tuning"]["dynamic_eval"]
    assert len(trials) == len(evaluation.DYNAMIC_GRID["lr"]) * len(evaluation.DYNAMIC_GRID["decay"])
    best = min(trials, key=lambda trial: trial["nll"])
    assert result["settings"]["dynamic_eval"]["lr"] == best["lr"]
    # Repeated text: adapting to it must beat the static model. (The cache needs informative states, which this
    # 30-step model lacks; its gains are measured on PTB in BENCHMARKS.md.)
    assert result["dynamic_eval_perplexity"] < result["perplexity"]
