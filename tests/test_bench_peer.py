"""bench/peer_word_language_model.py (the bare-PyTorch word_language_model peer) on a tiny generated corpus: the JSON
record, the test loss recomputed independently from the saved best model, the time budget and the lr schedule."""

import json
import math
import random

import pytest
import torch
from torch import nn

from tests.conftest import load_bench_script


WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "table",
    "and",
    "quickly",
    "slowly",
    "big",
    "small",
]
SIZES = ["--emsize", "16", "--nhid", "16", "--batch_size", "4", "--bptt", "10", "--threads", "1", "--smoke", "150"]


@pytest.fixture(scope="module")
def peer():
    return load_bench_script("peer_word_language_model")


@pytest.fixture
def one_thread():
    # The script sets the thread count for the whole process: give the rest of the suite its own back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus_dir(tmp_path):
    """ptb.{train,valid,test}.txt of 200 random short lines each; --smoke 150 keeps the first 150."""
    rng = random.Random(0)
    for split in ("train", "valid", "test"):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) for _ in range(200)]
        (tmp_path / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def recompute_test_loss(data_dir, model_path, emsize, nhid, nlayers):
    """The test loss without the script's code: own tokenisation, own modules, and one LSTM call over each whole
    eval column (the script's chunked evaluation carries the state across chunks, so it must give the same mean)."""
    vocab, splits = {}, {}
    for split in ("train", "valid", "test"):
        lines = (data_dir / f"ptb.{split}.txt").read_text().splitlines()[:150]
        words = [word for line in lines for word in line.split() + ["<eos>"]]
        splits[split] = [vocab.setdefault(word, len(vocab)) for word in words]
    ids = torch.tensor(splits["test"])
    columns = ids[: len(ids) // 10 * 10].view(10, -1).t()  # (n // 10, 10)
    model = nn.ModuleDict(
        {"encoder": nn.Embedding(len(vocab), emsize), "rnn": nn.LSTM(emsize, nhid, nlayers),
         "decoder": nn.Linear(nhid, len(vocab))}
    )  # fmt: skip
    model.load_state_dict(torch.load(model_path, weights_only=True))
    with torch.no_grad():
        output, _ = model["rnn"](model["encoder"](columns[:-1]))
        logits = model["decoder"](output)  # (n // 10 - 1, 10, vocab)
        return nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), columns[1:].reshape(-1)).item()


def test_smoke_run_writes_the_record_and_tests_the_best_model(peer, corpus_dir, tmp_path, one_thread):
    out, save = tmp_path / "peer.json", tmp_path / "best.pt"
    argv = ["--data", str(corpus_dir), *SIZES, "--epochs", "3", "--save", str(save), "--out", str(out)]
    returned = peer.main(argv)
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))  # what is written is what main returns

    assert results["recipe"]["emsize"] == 16 and results["recipe"]["tied"] and results["recipe"]["seed"] == 1111
    assert results["threads"] == 1 and results["torch"] == torch.__version__ and results["cpu"] and results["date"]
    assert results["epochs_completed"] == 3 and not results["stopped_by_budget"]
    curve = results["curve"]
    assert [point["epoch"] for point in curve] == [1, 2, 3]
    for point in curve:
        assert math.isfinite(point["valid_perplexity"]) and point["valid_perplexity"] > 1
        assert point["valid_perplexity"] == pytest.approx(math.exp(point["valid_loss"]))
    assert curve[0]["wall_s"] < curve[1]["wall_s"] < curve[2]["wall_s"] <= results["train_wall_s"]
    # Each epoch's lr: the previous one's, divided by 4 when that epoch's validation was no new best.
    assert curve[0]["lr"] == curve[1]["lr"] == 20.0  # epoch 1 is always a new best
    improved = curve[1]["valid_loss"] < curve[0]["valid_loss"]
    assert curve[2]["lr"] == (20.0 if improved else 5.0)
    assert results["best_valid_perplexity"] == pytest.approx(min(p["valid_perplexity"] for p in curve))

    assert math.isfinite(results["test_perplexity"]) and results["train_tokens_per_s"] > 0
    assert results["test_perplexity"] == pytest.approx(math.exp(results["test_loss"]))
    recomputed = recompute_test_loss(corpus_dir, save, emsize=16, nhid=16, nlayers=2)
    assert results["test_loss"] == pytest.approx(recomputed, rel=1e-5)
    assert not save.with_name(save.name + ".tmp").exists()  # saved through a tmp file, then renamed


def test_time_budget_stops_after_one_batch_and_still_validates(peer, corpus_dir, tmp_path, one_thread):
    argv = ["--data", str(corpus_dir), *SIZES, "--epochs", "5", "--max_minutes", "0", "--save", str(tmp_path / "m.pt")]
    results = peer.main(argv)
    assert results["stopped_by_budget"] and results["epochs_completed"] == 1 and len(results["curve"]) == 1
    assert results["train_tokens"] == 4 * 10  # one batch of 4 columns x 10 steps
    assert math.isfinite(results["test_perplexity"])


def test_lr_is_divided_by_4_only_when_validation_does_not_improve(peer):
    assert peer.anneal(20.0, 5.0, None) == (True, 20.0)  # the first epoch is always the best so far
    assert peer.anneal(20.0, 4.9, 5.0) == (True, 20.0)
    assert peer.anneal(20.0, 5.0, 5.0) == (False, 5.0)  # no strict improvement
    assert peer.anneal(5.0, 6.0, 5.0) == (False, 1.25)


def test_batchify_and_get_batch_follow_the_original(peer):
    data = peer.batchify(torch.arange(26), 4)  # the original's alphabet example: 4 columns, 2 letters trimmed
    assert data.shape == (6, 4) and data[:, 1].tolist() == [6, 7, 8, 9, 10, 11]
    inputs, targets = peer.get_batch(data, 4, bptt=3)  # only one row left to predict from at i = 4
    assert inputs.tolist() == [[4, 10, 16, 22]] and targets.tolist() == [5, 11, 17, 23]
    hidden = tuple(torch.zeros(1, requires_grad=True) * 2 for _ in range(2))
    assert all(not h.requires_grad for h in peer.repackage_hidden(hidden))
