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
            # fp32: on this 30-step model whether any dynamic-evaluation rate beats the static one on the tuning text
            # hangs on the last digits (the bf16-trained one picks "off"); the evaluation path is what is tested.
            "--bf16", "false",
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
    assert result["tuning"]["text"] == f"--tune_file {tmp_path / 'valid.txt'}"
    trials = [trial for trial in result["tuning"]["dynamic_eval"] if trial["perplexity"] is not None]
    best = min(trials, key=lambda trial: trial["perplexity"])
    assert result["settings"]["dynamic_eval"] == {"bptt": 5, "lr": best["lr"], "decay": best["decay"]}
    # Repeated text: adapting to it must beat the static model. (The cache needs informative states, which this
    # 30-step model lacks; its gains are measured on PTB in BENCHMARKS.md.)
    assert result["dynamic_eval_perplexity"] < result["perplexity"]


# ----- tuning the adaptive methods: scales, "off", flags kept, never silently worse -----


def test_dynamic_eval_search_spans_the_scales_and_refines(monkeypatch):
    """Half decades 1e-5 .. 1e-2 at decay 0.002, then quarter decades around the best, then the decay in 0 .. 0.1:
    it finds a minimum between the coarse points (5.6e-5, decay 0) in 12 passes."""
    calls = []

    def fake_nll(model, tokens, rms, lr, decay, bptt, stop_above):  # best at lr 5.6e-5, decay 0; 100 = static
        calls.append((lr, decay))
        return 90 + (math.log10(lr) - math.log10(5.6e-5)) ** 2 + 50 * decay

    monkeypatch.setattr(evaluation, "dynamic_eval_nll", fake_nll)
    best, trials = evaluation.tune_dynamic_eval(None, np.zeros(11), None, static_nll=100.0)
    assert best == {"lr": 5.62e-05, "decay": 0.0}
    assert trials[0]["setting"] == evaluation.OFF and len(calls) == len(set(calls)) == 12
    assert calls[7:9] == [(5.62e-05, 0.002), (1.78e-04, 0.002)]  # a quarter decade either side of 1e-4
    assert {1e-5, 1e-2} <= {lr for lr, _ in calls} and {0.0, 0.002, 0.02, 0.1} <= {decay for _, decay in calls}


def test_dynamic_eval_search_picks_off_when_nothing_beats_static_and_keeps_a_given_lr(monkeypatch):
    monkeypatch.setattr(evaluation, "dynamic_eval_nll", lambda *args, stop_above, **kwargs: math.inf)  # all worse
    best, trials = evaluation.tune_dynamic_eval(None, np.zeros(11), None, static_nll=100.0)
    assert best == evaluation.OFF and trials[0] == {"setting": "off", "perplexity": pytest.approx(math.exp(10))}
    assert all(trial.get("stopped") for trial in trials[1:])

    calls = []
    monkeypatch.setattr(
        evaluation, "dynamic_eval_nll", lambda m, t, r, lr, decay, bptt, stop_above: calls.append((lr, decay)) or 99.0
    )
    best, trials = evaluation.tune_dynamic_eval(None, np.zeros(11), None, static_nll=100.0, fixed={"lr": 1e-4})
    assert {lr for lr, _ in calls} == {1e-4} and all("setting" not in trial for trial in trials)  # no "off" either
    assert best["lr"] == 1e-4


def test_neural_cache_search_includes_off():
    model, tokens = tiny_lm(), stream(80)
    log_probs, states, targets = evaluation.score_stream(model, tokens)
    best, trials = evaluation.tune_neural_cache(log_probs, states, targets, cache_size=20)
    assert trials[0]["setting"] == evaluation.OFF
    assert trials[0]["perplexity"] == pytest.approx(math.exp(-float(log_probs.sum()) / len(targets)))
    assert len(trials) == 1 + len(evaluation.CACHE_GRID["theta"]) * len(evaluation.CACHE_GRID["lambdah"])
    scored = {(t.get("theta"), t.get("lambdah")): t["perplexity"] for t in trials}
    chosen = (None, None) if best == evaluation.OFF else (best["theta"], best["lambdah"])
    assert scored[chosen] == min(scored.values())
    fixed, trials = evaluation.tune_neural_cache(log_probs, states, targets, 20, fixed={"lambdah": 0.2})
    assert fixed["lambdah"] == 0.2 and {t["lambdah"] for t in trials} == {0.2}  # given: kept, and no "off"


SHIFT_TOPIC = {"animate": [("farmer", "farmers"), ("dog", "dogs")], "inanimate": [("bridge", "bridges")]}


def topic_shifted(sentences: list[str], seed: int) -> list[str]:
    """The demo grammar's sentences with every noun replaced by one of three (number kept): a held-out text on one
    narrow topic, where a model that adapts to what it reads gains."""
    from rnn_lm_hf import demo_corpus

    rng, shifted = np.random.default_rng(seed), []
    for sentence in sentences:
        mapping = {}
        for kind, nouns in (("animate", demo_corpus.ANIMATE_NOUNS), ("inanimate", demo_corpus.INANIMATE_NOUNS)):
            for singular, plural in nouns:
                new = SHIFT_TOPIC[kind][rng.integers(len(SHIFT_TOPIC[kind]))]
                mapping[singular], mapping[plural] = new
        words = [mapping.get(word, word) for word in sentence.split()]
        words = [("an" if nxt[0] in "aeiou" else "a") if w in ("a", "an") else w for w, nxt in zip(words, words[1:])]
        shifted.append(" ".join([*words, "."]))
    return shifted


@pytest.fixture(scope="module")
def demo_lm(tmp_path_factory):
    """A small word LM trained by `rnn-lm train` on the demo grammar (in-distribution validation file), and a
    topic-shifted held-out text."""
    from rnn_lm_hf.demo_corpus import generate_corpus
    from rnn_lm_hf.training import train_clm

    folder = tmp_path_factory.mktemp("demo_lm")
    sentences = generate_corpus(2150, seed=11)
    (folder / "train.txt").write_text("\n".join(sentences[:2000]) + "\n")
    (folder / "valid.txt").write_text("\n".join(sentences[2000:2150]) + "\n")
    (folder / "shifted.txt").write_text("\n".join(topic_shifted(generate_corpus(150, seed=12), seed=0)) + "\n")
    train_clm.main(
        [
            "--train_file", str(folder / "train.txt"), "--validation_file", str(folder / "valid.txt"),
            "--output_dir", str(folder / "lm"), "--config_overrides", "hidden_size=48,num_hidden_layers=1",
            "--num_train_epochs", "3", "--learning_rate", "0.01", "--per_device_train_batch_size", "16",
            "--per_device_eval_batch_size", "8", "--report_to", "none", "--use_cpu", "True", "--disable_tqdm", "True",
            "--num_samples", "0", "--save_strategy", "no", "--seed", "3",
        ]
    )  # fmt: skip
    return folder


def test_adaptive_defaults_are_tuned_on_the_run_validation_and_never_silently_worse(demo_lm, capsys):
    """`rnn-lm evaluate MODEL --file F --dynamic_eval --neural_cache`, no other flag, on a model from `rnn-lm train`:
    settings tuned on the run's own validation file (grids with "off"), printed; on a topic-shifted text dynamic
    evaluation beats static; no adaptive number above static without a warning. Flags given are kept, untuned."""
    shifted, lm = str(demo_lm / "shifted.txt"), str(demo_lm / "lm")
    assert cli_main(["evaluate", lm, "--file", shifted, "--dynamic_eval", "--neural_cache"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    static = result["perplexity"]
    assert result["tuning"]["text"] == f"the run's validation_file {demo_lm / 'valid.txt'}"
    assert f"settings (tuned on the run's validation_file {demo_lm / 'valid.txt'}" in captured.err
    dynamic_trials = result["tuning"]["dynamic_eval"]
    assert dynamic_trials[0]["setting"] == "off" and {1e-5, 1e-2} <= {t.get("lr") for t in dynamic_trials}
    assert 0.0 in {t.get("decay") for t in dynamic_trials} and len(dynamic_trials) <= 13
    assert result["tuning"]["neural_cache"][0]["setting"] == "off"
    for method in ("neural_cache", "dynamic_eval"):
        if result["settings"][method] == "off":
            assert result[f"{method}_perplexity"] == static
            assert any(note.startswith(f"{method} is off") for note in result["notes"])
        elif result[f"{method}_perplexity"] > static:
            assert any(warning.startswith(f"{method}_perplexity") for warning in result["warnings"])
    assert result["dynamic_eval_perplexity"] < 0.95 * static, result  # the topic shift: adapting pays

    # Settings given as flags are kept as given, not tuned; a worse number says so.
    argv = ["evaluate", lm, "--file", shifted, "--dynamic_eval", "--dynamic_lr", "0.03", "--dynamic_decay", "0"]
    argv += ["--neural_cache", "--cache_size", "2", "--cache_theta", "1", "--cache_lambda", "0.9"]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    forced = json.loads(captured.out)
    assert "tuning" not in forced
    assert forced["settings"]["dynamic_eval"] == {"bptt": 5, "lr": 0.03, "decay": 0.0}
    assert forced["settings"]["neural_cache"] == {"cache_size": 2, "theta": 1.0, "lambdah": 0.9}
    for method in ("neural_cache", "dynamic_eval"):
        assert forced[f"{method}_perplexity"] > static
        assert any(w.startswith(f"{method}_perplexity") and "ABOVE the static" in w for w in forced["warnings"])
        assert f"warning: {method}_perplexity" in captured.err


# ----- one-line errors of `rnn-lm evaluate` -----


@pytest.fixture
def saved_lm(tmp_path):
    """A saved (untrained) word-level LM with its tokenizer, without run_info.json, and a text file."""
    from rnn_lm_hf.tokenization import train_tokenizer

    lines = ["the cat sat on the mat .", "the dog ran to the cat ."] * 20
    tokenizer = train_tokenizer(lines, kind="word")
    torch.manual_seed(0)
    RNNLMForCausalLM(make_config("lstm", vocab_size=len(tokenizer), hidden_size=8)).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-3000:]
    return errors[0]


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_evaluate_names_the_file_option(saved_lm, case, capsys):
    file = saved_lm / ("nope.txt" if case == "missing" else "empty.txt")
    if case == "empty":
        file.write_text("")
    assert cli_main(["evaluate", str(saved_lm / "lm"), "--file", str(file)]) == 2
    expected = {
        "missing": f"error: --file: no such file {str(file)!r}; check the path.",
        "empty": f"error: --file: {file} is empty; point it at a file with text.",
    }
    assert one_error_line(capsys) == expected[case]


def test_evaluate_without_tokenizer_files_names_the_fix(saved_lm, capsys):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (saved_lm / "lm" / name).unlink()
    assert cli_main(["evaluate", str(saved_lm / "lm"), "--file", str(saved_lm / "text.txt")]) == 2
    error = one_error_line(capsys)
    assert "has no tokenizer" in error and "tokenizer.save_pretrained" in error and "sentencepiece" not in error


def test_evaluate_on_a_classifier_says_it_holds_a_classifier(saved_lm, capsys):
    from transformers import AutoTokenizer

    from rnn_lm_hf import RNNLMConfig, RNNLMForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(saved_lm / "lm")
    config = RNNLMConfig(vocab_size=len(tokenizer), hidden_size=8, bidirectional=True, id2label={0: "neg", 1: "pos"})
    RNNLMForSequenceClassification(config).save_pretrained(saved_lm / "clf")
    tokenizer.save_pretrained(saved_lm / "clf")
    assert cli_main(["evaluate", str(saved_lm / "clf"), "--file", str(saved_lm / "text.txt")]) == 2
    error = one_error_line(capsys)
    assert "holds a RNNLMForSequenceClassification" in error and "`rnn-lm evaluate` needs a causal LM" in error
    assert "pipeline('text-classification'" in error and "bidirectional" not in error


def test_adaptive_evaluation_without_tuning_text_is_refused_unless_settings_are_given(saved_lm, capsys):
    """No --tune_file and no validation text in the folder: defaults that may be worse than static are refused; a
    setting given is used, the rest from the defaults, with a note."""
    lm, text = str(saved_lm / "lm"), str(saved_lm / "text.txt")
    assert cli_main(["evaluate", lm, "--file", text, "--neural_cache"]) == 2
    error = one_error_line(capsys)
    assert "--neural_cache" in error and "--tune_file" in error and "names no validation text" in error
    assert cli_main(["evaluate", lm, "--file", text, "--neural_cache", "--cache_lambda", "0.2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["neural_cache"] == {"cache_size": 500, "theta": 1.0, "lambdah": 0.2}
    assert result["notes"][0].startswith("neural_cache: nothing to tune on")


def test_validation_text_of_a_run_that_carved_it_from_train(saved_lm):
    """A run without a validation file held out a share of train: tuning uses the same lines."""
    from transformers import AutoTokenizer

    from rnn_lm_hf.data import load_text_datasets, tokenize_to_stream

    train = saved_lm / "text.txt"
    arguments = {"train_file": str(train), "validation_split_percentage": 20, "seed": 5}
    (saved_lm / "lm" / "run_info.json").write_text(json.dumps({"arguments": arguments}))
    tokenizer = AutoTokenizer.from_pretrained(saved_lm / "lm")
    text, tokens = evaluation.run_validation_stream(saved_lm / "lm", tokenizer, evaluation.TextOptions())
    held_out = load_text_datasets(train_file=str(train), validation_split_percentage=20, seed=5)["validation"]
    assert text == f"the 20% of {train} the run held out for validation" and len(held_out) == 8
    np.testing.assert_array_equal(tokens, tokenize_to_stream(held_out, tokenizer))
