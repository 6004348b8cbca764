"""Every row of docs/bad_inputs.md: a bad input at a public edge gives one clear error naming the argument, the value
and the fix. Python edges raise; the scripts and the CLI exit with status 2 and one `error:` line, no traceback."""

import re
import sys
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
import torch
from transformers import pipeline

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification, cli
from rnn_lm_hf.classification_data import read_classification_file
from rnn_lm_hf.data import DataError, StreamSegments, load_text_datasets
from rnn_lm_hf.hub import check_model_source
from rnn_lm_hf.modeling_rnn_lm import NotACausalLMError
from rnn_lm_hf.tagging_data import read_conll, tokenize_and_align_labels
from rnn_lm_hf.tokenization import check_special_tokens, train_tokenizer, word_tokenizer_from_vocab
from rnn_lm_hf.training import train_clm, train_sequence_classification, train_token_classification


REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
TABLE = REPO / "docs" / "bad_inputs.md"
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--max_steps", "1"]
IDS = torch.tensor([[4, 5, 6, 7, 8], [8, 7, 6, 5, 4]])  # (batch 2, seq_len 5)


def config(**overrides) -> RNNLMConfig:
    return RNNLMConfig(**{"vocab_size": 20, "hidden_size": 8, "num_labels": 3, **overrides})


def offline(tmp, call, *args):
    """`call(*args)` with the Hub offline and an empty cache in `tmp`, as on a fresh clone without network."""
    with mock.patch.multiple(huggingface_hub.constants, HF_HUB_OFFLINE=True, HF_HUB_CACHE=str(tmp)):
        return call(*args)


def lm() -> RNNLMForCausalLM:
    return RNNLMForCausalLM(config())


def bad_special_ids():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"the": 0, "<unk>": 1, "<pad>": 2, "<bos>": 3, "<eos>": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    check_special_tokens(PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>"))


def bidirectional_classifier(tmp: Path) -> str:
    """A saved bidirectional two-label classifier with its tokenizer."""
    tokenizer = train_tokenizer(["a fine film", "a dull film"])
    RNNLMForSequenceClassification(
        config(vocab_size=len(tokenizer), bidirectional=True, num_labels=2)
    ).save_pretrained(tmp / "clf")
    tokenizer.save_pretrained(tmp / "clf")
    return str(tmp / "clf")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# id -> (call, exception, substrings the message must contain). Each call takes the test's tmp_path.
API_ROWS = {
    # ----- config -----
    "config-cell-type": (lambda tmp: RNNLMConfig(cell_type="transformer"), ValueError, ["cell_type", "'transformer'", "'lstm'"]),
    "config-nonlinearity": (lambda tmp: RNNLMConfig(rnn_nonlinearity="sigmoid"), ValueError, ["rnn_nonlinearity", "'sigmoid'", "'relu'"]),
    "config-dropout": (lambda tmp: RNNLMConfig(dropout=1.5), ValueError, ["dropout", "1.5", "[0, 1)"]),
    "config-pooling": (lambda tmp: RNNLMConfig(classifier_pooling="avg"), ValueError, ["classifier_pooling", "'avg'", "'mean'"]),
    "config-hidden-size": (lambda tmp: RNNLMConfig(hidden_size=0), ValueError, ["hidden_size", "positive int", "0"]),
    "config-override-value": (lambda tmp: RNNLMConfig().update_from_string("hidden_size=big"), ValueError, ["hidden_size", "big"]),
    "config-override-field": (lambda tmp: RNNLMConfig().update_from_string("hiden_size=3"), ValueError, ["hiden_size", "did you mean hidden_size?", "hidden_size=256"]),
    "config-bidirectional-lm": (lambda tmp: RNNLMForCausalLM(config(bidirectional=True)), ValueError, ["bidirectional=True", "RNNLMForCausalLM", "RNNLMForTokenClassification"]),
    "config-head-embeddings": (lambda tmp: RNNLMConfig(head_embedding_size=128), ValueError, ["head_embedding_size=128", "no head RNN", "head_rnn_size"]),
    # ----- each head's forward -----
    "forward-inputs-twice": (lambda tmp: lm()(input_ids=IDS, inputs_embeds=torch.zeros(2, 5, 8)), ValueError, ["input_ids", "inputs_embeds", "exactly one"]),
    "forward-token-id": (lambda tmp: lm()(torch.tensor([[3, 25]])), ValueError, ["token id 25", "[0, 20)", "resize_token_embeddings"]),
    "forward-mask-length": (lambda tmp: lm()(IDS, attention_mask=torch.ones(2, 3, dtype=torch.long)), ValueError, ["attention_mask", "(2, 3)", "(2, 5)"]),
    "forward-lm-labels-shape": (lambda tmp: lm()(IDS, labels=IDS[:, :3]), ValueError, ["labels", "(2, 3)", "(2, 5)", "-100"]),
    "forward-tagger-labels-shape": (lambda tmp: RNNLMForTokenClassification(config())(IDS, labels=IDS[:, :3] % 3), ValueError, ["labels", "(2, 3)", "(2, 5)"]),
    "forward-tagger-label-range": (lambda tmp: RNNLMForTokenClassification(config())(IDS, labels=torch.full((2, 5), 7)), ValueError, ["labels", "7", "num_labels=3"]),
    "forward-classifier-label-range": (lambda tmp: RNNLMForSequenceClassification(config())(IDS, labels=torch.tensor([0, 3])), ValueError, ["labels", "3", "num_labels"]),
    "forward-classifier-labels-shape": (lambda tmp: RNNLMForSequenceClassification(config())(IDS, labels=torch.tensor([0, 1, 1])), ValueError, ["labels", "(3,)", "(2,)"]),
    # ----- generate -----
    "generate-token-id": (lambda tmp: lm().generate(torch.tensor([[3, 30]]), max_new_tokens=2), ValueError, ["token id 30", "resize_token_embeddings"]),
    "generate-mask-shorter": (lambda tmp: lm().generate(IDS, attention_mask=torch.ones(2, 3, dtype=torch.long), max_new_tokens=2), ValueError, ["attention_mask", "(2, 3)"]),
    "pipeline-generation-classifier": (lambda tmp: pipeline("text-generation", model=bidirectional_classifier(tmp)), NotACausalLMError, ["holds a bidirectional RNNLMForSequenceClassification", "pipeline('text-classification'", "AutoModelForSequenceClassification"]),
    # ----- tokenizers -----
    "tokenizer-kind": (lambda tmp: train_tokenizer(["a b"], kind="wordpiece"), ValueError, ["'wordpiece'", "word, char, bpe"]),
    "tokenizer-vocab-size": (lambda tmp: train_tokenizer(["a b"], vocab_size=0), ValueError, ["vocab_size", "positive int", "0"]),
    "tokenizer-no-text": (lambda tmp: train_tokenizer([]), ValueError, ["No word types", "non-empty texts", "min_frequency"]),
    "tokenizer-special-ids": (lambda tmp: bad_special_ids(), ValueError, ["'<pad>': 2", "'<pad>': 0", "train_tokenizer"]),
    # ----- data loading -----
    "data-missing-file": (lambda tmp: load_text_datasets(train_file=str(tmp / "nope.txt")), DataError, ["train_file", "nope.txt", "no such file"]),
    "data-block-size": (lambda tmp: StreamSegments(torch.arange(10), bptt=35, per_device_batch_size=4), DataError, ["block_size=35", "9 tokens", "lower block_size"]),
    "data-conll-columns": (lambda tmp: read_conll(write(tmp / "t.conll", "a\tB-X\nb\tO\tO\n")), DataError, ["t.conll:2", "3 column(s)", "one tab"]),
    "data-tags-per-token": (lambda tmp: tokenize_and_align_labels({"tokens": [["Tom", "works"]], "tags": [["B-PER"]]}, word_tokenizer_from_vocab(["Tom", "works"]), {"B-PER": 0}), DataError, ["'Tom works'", "2 tokens but 1 tags", "exactly one tag"]),
    "data-tagging-not-conll": (lambda tmp: read_conll(FIXTURES / "sentiment" / "train.tsv"), DataError, ["train.tsv:2", "'smart and entertaining' holds spaces", "not a tagging file", "train-classifier"]),
    "data-unknown-class": (lambda tmp: read_classification_file(write(tmp / "d.tsv", "sentence\tlabel\nfine\tmaybe\n"), label_names=["neg", "pos"]), DataError, ["d.tsv:2", "'maybe'", "--label_values"]),
    # ----- Hub loading -----
    "hub-missing-folder": (lambda tmp: check_model_source("./runs/lm_wikitxt2"), FileNotFoundError, ["./runs/lm_wikitxt2", "no such model folder", "org/name"]),
    "hub-offline-uncached": (lambda tmp: offline(tmp, check_model_source, "lms/word_bilm"), FileNotFoundError, ["lms/word_bilm", "no such model folder", "HF_HUB_OFFLINE is set with no Hub repo of that id cached"]),
}  # fmt: skip


@pytest.mark.parametrize("row", list(API_ROWS))
def test_python_edges_raise_one_clear_error(row, tmp_path):
    call, error, expected = API_ROWS[row]
    with pytest.raises(error) as raised:
        call(tmp_path)
    message = str(raised.value)
    assert "\n" not in message.strip(), message
    for part in expected:
        assert part in message, (part, message)


# ----- the scripts and the CLI: exit status 2, one `error:` line -----


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """A saved (untrained) two-label sentiment classifier with its tokenizer."""
    folder = tmp_path_factory.mktemp("classifier")
    tokenizer = train_tokenizer(["a fine film", "a dull film"])
    labels = {0: "neg", 1: "pos"}
    model_config = RNNLMConfig(vocab_size=len(tokenizer), hidden_size=8, id2label=labels)
    RNNLMForSequenceClassification(model_config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def ner(*extra: str, output_dir: Path) -> list[str]:
    return ["--train_file", str(FIXTURES / "ner" / "train.conll"), "--output_dir", str(output_dir), *extra, *COMMON]


def sentiment(*extra: str, output_dir: Path) -> list[str]:
    train = str(FIXTURES / "sentiment" / "train.tsv")
    return ["--train_file", train, "--output_dir", str(output_dir), "--do_train", *extra, *COMMON]


def three_labels(tmp: Path) -> str:
    return str(write(tmp / "three.tsv", "sentence\tlabel\ngood\tpos\nbad\tneg\nso so\tmixed\n"))


def saved_lm(tmp: Path, tokenizer_files: bool = True) -> str:
    """A saved (untrained) causal LM with its tokenizer, or without the tokenizer files; no run_info.json."""
    tokenizer = train_tokenizer(["a fine film", "a dull film"])
    folder = tmp / ("lm" if tokenizer_files else "lm_without_tokenizer")
    RNNLMForCausalLM(config(vocab_size=len(tokenizer))).save_pretrained(folder)
    if tokenizer_files:
        tokenizer.save_pretrained(folder)
    return str(folder)


def text_file(tmp: Path) -> str:
    return str(write(tmp / "t.txt", "a fine film\n" * 20))


# id -> (main(argv, tmp_path, classifier_dir) -> exit status, substrings of the error line)
COMMAND_ROWS = {
    "script-no-arguments": (lambda tmp, clf: train_clm.cli([]), ["nothing to train on", "--train_file", "rnn-lm demo"]),
    "script-missing-train-file": (lambda tmp, clf: train_token_classification.cli(["--train_file", str(tmp / "train.conll"), "--output_dir", str(tmp)]), ["--train_file", "train.conll", "no such file"]),
    "script-missing-model-folder": (lambda tmp, clf: train_token_classification.cli(ner("--model_name_or_path", "runs/lm_wikitxt2", output_dir=tmp)), ["--model_name_or_path runs/lm_wikitxt2", "no such model folder", "org/name"]),
    "script-lm-missing-model-folder": (lambda tmp, clf: train_clm.cli(["--model_name_or_path", "runs/lm", "--train_file", "x.txt", "--output_dir", str(tmp)]), ["--model_name_or_path runs/lm", "no such model folder"]),
    "script-config-override": (lambda tmp, clf: train_token_classification.cli(ner("--config_overrides", "hidden_size=big", output_dir=tmp)), ["hidden_size", "big"]),
    "script-bad-value": (lambda tmp, clf: train_clm.cli(["--train_file", "x.txt", "--output_dir", str(tmp), "--learning_rate", "abc"]), ["--learning_rate", "invalid float value: 'abc'", "--help"]),
    "script-unknown-option": (lambda tmp, clf: train_clm.cli(["--train_file", "x.txt", "--lerning_rate", "3e-3"]), ["unknown option --lerning_rate", "did you mean --learning_rate?"]),
    "script-config-field-as-flag": (lambda tmp, clf: train_clm.cli(["--train_file", "x.txt", "--cell_type", "gru"]), ["--cell_type is a model config field", "--config_overrides cell_type=gru"]),
    "script-tagger-classification-file": (lambda tmp, clf: train_token_classification.cli(["--train_file", str(FIXTURES / "sentiment" / "train.tsv"), "--output_dir", str(tmp), *COMMON]), ["train.tsv:2", "not a tagging file", "train-classifier"]),
    "script-label-sub-token": (lambda tmp, clf: train_token_classification.cli(ner("--label_sub_token", "middle", output_dir=tmp)), ["--label_sub_token", "first, last", "'middle'"]),
    "script-threads": (lambda tmp, clf: train_sequence_classification.cli(sentiment("--threads", "0", output_dir=tmp)), ["--threads", ">= 1", "0"]),
    "script-on-nonfinite": (lambda tmp, clf: train_sequence_classification.cli(sentiment("--on_nonfinite", "ignore", output_dir=tmp)), ["--on_nonfinite", "stop, skip", "'ignore'"]),
    "script-head-label-count": (lambda tmp, clf: train_sequence_classification.cli(["--model_name_or_path", str(clf), "--train_file", three_labels(tmp), "--output_dir", str(tmp), "--do_train", *COMMON]), ["2 labels ['neg', 'pos']", "3", "--ignore_mismatched_sizes"]),
    "script-adaptation-not-an-lm": (lambda tmp, clf: train_sequence_classification.cli(sentiment("--model_name_or_path", str(clf), "--lm_adaptation_epochs", "1", output_dir=tmp)), ["--lm_adaptation_epochs", "is not one", "causal-LM folder"]),
    "script-task-vocabulary-without-lm": (lambda tmp, clf: train_sequence_classification.cli(sentiment("--task_vocabulary", "true", output_dir=tmp)), ["--task_vocabulary", "word-level LM", "--model_name_or_path"]),
    "script-cv-fold-indices": (lambda tmp, clf: train_sequence_classification.cli(["--train_file", str(FIXTURES / "sentiment" / "rt"), "--cv_folds", "3", "--cv_fold_indices", "3", "--output_dir", str(tmp), *COMMON]), ["--cv_fold_indices [3]", "0..k-1"]),
    "cli-unknown-command": (lambda tmp, clf: cli.main(["frobnicate"]), ["unknown command 'frobnicate'", "generate"]),
    "cli-bare-train": (lambda tmp, clf: cli.main(["train"]), ["nothing to train on", "rnn-lm demo"]),
    "cli-generate-classifier": (lambda tmp, clf: cli.main(["generate", str(clf), "a fine"]), ["RNNLMForSequenceClassification", "causal LM", "pipeline('text-classification'"]),
    "cli-generate-missing-folder": (lambda tmp, clf: cli.main(["generate", "./no_such_model", "hi"]), ["./no_such_model", "no such model folder"]),
    "cli-evaluate-missing-file": (lambda tmp, clf: cli.main(["evaluate", saved_lm(tmp), "--file", str(tmp / "nope.txt")]), ["--file: no such file", "nope.txt"]),
    "cli-evaluate-empty-file": (lambda tmp, clf: cli.main(["evaluate", saved_lm(tmp), "--file", str(write(tmp / "empty.txt", ""))]), ["--file:", "empty.txt is empty"]),
    "cli-evaluate-no-tokenizer": (lambda tmp, clf: cli.main(["evaluate", saved_lm(tmp, tokenizer_files=False), "--file", text_file(tmp)]), ["has no tokenizer", "tokenizer.save_pretrained", "rnn-lm check"]),
    "cli-generate-no-tokenizer": (lambda tmp, clf: cli.main(["generate", saved_lm(tmp, tokenizer_files=False), "a fine"]), ["has no tokenizer", "`rnn-lm generate`", "rnn-lm check"]),
    "cli-analyze-no-tokenizer": (lambda tmp, clf: cli.main(["analyze", "gradients", saved_lm(tmp, tokenizer_files=False), "--file", text_file(tmp), "--output_dir", str(tmp / "out")]), ["has no tokenizer", "`rnn-lm analyze`", "rnn-lm check"]),
    "cli-evaluate-classifier": (lambda tmp, clf: cli.main(["evaluate", str(clf), "--file", text_file(tmp)]), ["RNNLMForSequenceClassification", "`rnn-lm evaluate` needs a causal LM", "pipeline('text-classification'"]),
    "cli-evaluate-adaptive-untuned": (lambda tmp, clf: cli.main(["evaluate", saved_lm(tmp), "--file", text_file(tmp), "--dynamic_eval"]), ["--dynamic_eval", "held-out text", "--tune_file"]),
    "cli-tokenizer-missing-file": (lambda tmp, clf: cli.main(["tokenizer", str(tmp / "corpus.txt"), "--output_dir", str(tmp)]), ["corpus.txt", "no such file"]),
    "cli-threads": (lambda tmp, clf: cli.main(["--threads", "many", "demo"]), ["--threads", "positive int", "'many'"]),
    "cli-plot-without-log": (lambda tmp, clf: cli.main(["plot", str(tmp)]), ["training_log.csv is missing", "training scripts"]),
    "hub-card-without-results": (lambda tmp, clf: cli.main(["card", str(clf)]), ["no evaluation metrics", "save_metrics"]),
    "hub-push-not-a-folder": (lambda tmp, clf: cli.main(["push", str(tmp / "missing"), "org/name"]), ["missing is not a folder", "output folder"]),
}  # fmt: skip


@pytest.mark.parametrize("row", list(COMMAND_ROWS))
def test_scripts_and_cli_exit_2_with_one_error_line(row, tmp_path, classifier_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # so runs/lm_wikitxt2 is a mistyped local path, not a Hub id
    monkeypatch.setattr(sys, "argv", ["rnn-lm"])
    run, expected = COMMAND_ROWS[row]
    assert run(tmp_path, classifier_dir) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and err.strip().splitlines()[-1] == error_lines[0], err[-3000:]
    for part in expected:
        assert part in error_lines[0], (part, error_lines[0])


def test_every_row_is_in_the_table_and_every_table_row_is_tested():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", TABLE.read_text(), flags=re.MULTILINE)
    assert len(documented) == len(set(documented)) >= 25
    assert set(documented) == set(API_ROWS) | set(COMMAND_ROWS)
