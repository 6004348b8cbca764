"""training/train_sequence_classification.py on tiny fixtures: tsv/jsonl, class files (Latin-1), k-fold, pipelines."""

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from rnn_lm_hf.training import train_sequence_classification as script
from tests.conftest import run_hub_code


SENTIMENT = Path(__file__).resolve().parent / "fixtures" / "sentiment"
TINY_MODEL = "hidden_size=16,embedding_size=12,num_hidden_layers=1,bidirectional=true,classifier_pooling=max"
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]
TEXTS = ["a charming and witty film", "a dull , pointless mess", "smart"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    files = ["--train_file", SENTIMENT / "train.tsv", "--validation_file", SENTIMENT / "dev.tsv"]
    files += ["--test_file", SENTIMENT / "test.jsonl"]
    flags = ["--config_overrides", TINY_MODEL, "--output_dir", folder, "--do_train", "--do_eval", "--do_predict"]
    metrics = script.main([str(a) for a in [*files, *flags, *COMMON, "--max_steps", "3"]])
    return folder, metrics


def test_metrics_and_saved_folder(classifier):
    folder, metrics = classifier
    for key in ("train_loss", "eval_accuracy", "eval_macro_f1", "test_accuracy", "test_macro_f1"):
        assert 0 <= metrics[key] < float("inf"), key
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"} and config["architectures"] == ["RNNLMForSequenceClassification"]
    run_info = json.loads((folder / "run_info.json").read_text())
    card = ModelCard((folder / "README.md").read_text())  # the model card, written from the run
    assert card.data.pipeline_tag == "text-classification"
    assert {r.task_type for r in card.data.eval_results} == {"text-classification"}
    assert "RNNLMForSequenceClassification" in card.text and "AutoModelForSequenceClassification" in card.text
    assert run_info["task"] == "sequence-classification" and run_info["metrics"] == metrics
    assert len((folder / "test_predictions.tsv").read_text().splitlines()) == 4


def test_pipeline_matches_the_models_argmax(classifier):
    folder, _ = classifier
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits  # (3, 2), left padding
    expected = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert [p["label"] for p in pipeline("text-classification", model=folder)(TEXTS)] == expected
    scores = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)(TEXTS[:1])[0]
    torch.testing.assert_close(
        torch.tensor([s["score"] for s in sorted(scores, key=lambda s: s["label"])]), logits[0].softmax(-1)
    )


HUB_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["rnn_lm_hf"] = None  # everything must come from the folder's own code
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    folder, texts = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()
    labels = [p["label"] for p in pipeline("text-classification", model=model, tokenizer=tokenizer)(texts)]
    assert labels == [model.config.id2label[i] for i in ids], (labels, ids)
    print("ok")
    """
)


def test_pipeline_through_hub_code(classifier, tmp_path):
    folder, _ = classifier
    result = run_hub_code(HUB_CODE_SCRIPT, str(folder), json.dumps(TEXTS), cwd=tmp_path)
    assert result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_class_files_latin1_cross_validation(tmp_path):
    argv = ["--train_file", str(SENTIMENT / "rt"), "--encoding", "latin-1", "--cv_folds", "3"]
    argv += ["--validation_split_percentage", "20", "--config_overrides", TINY_MODEL, "--output_dir", str(tmp_path)]
    metrics = script.main([*argv, "--do_train", "--do_eval", *COMMON, "--max_steps", "2"])
    assert {f"fold_{i}_test_accuracy" for i in range(3)} <= set(metrics)
    folds = [metrics[f"fold_{i}_test_accuracy"] for i in range(3)]
    assert metrics["cv_accuracy_mean"] == pytest.approx(sum(folds) / 3)
    assert json.loads((tmp_path / "cv_results.json").read_text()) == metrics
    config = json.loads((tmp_path / "fold_0" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    vocab = AutoTokenizer.from_pretrained(tmp_path / "fold_0").get_vocab()
    assert "café" in vocab or "cliché" in vocab  # decoded as Latin-1, not mangled


def test_cv_fold_indices_run_those_folds_exactly_as_the_full_run_does(tmp_path):
    argv = ["--train_file", str(SENTIMENT / "rt"), "--encoding", "latin-1", "--cv_folds", "3", "--do_train"]
    argv += ["--validation_split_percentage", "20", "--config_overrides", TINY_MODEL, *COMMON, "--max_steps", "2"]
    full = script.main([*argv, "--output_dir", str(tmp_path / "all")])
    part = script.main([*argv, "--output_dir", str(tmp_path / "part"), "--cv_fold_indices", "2", "0"])
    assert sorted(key for key in part if key.startswith("fold_") and key.endswith("accuracy")) == [
        "fold_0_test_accuracy", "fold_2_test_accuracy",
    ]  # fmt: skip
    for fold in (0, 2):
        assert part[f"fold_{fold}_test_accuracy"] == full[f"fold_{fold}_test_accuracy"]
    assert part["cv_accuracy_mean"] == pytest.approx((full["fold_0_test_accuracy"] + full["fold_2_test_accuracy"]) / 2)
    assert sorted(path.name for path in (tmp_path / "part").glob("fold_*")) == ["fold_0", "fold_2"]
    with pytest.raises(ValueError, match="--cv_fold_indices"):
        script.main([*argv, "--output_dir", str(tmp_path / "bad"), "--cv_fold_indices", "3"])


@pytest.mark.parametrize(
    ("files", "extra", "expected"),
    [
        ({"train.tsv": "sentence\tlabel\ngood\t1\n"}, ["--label_column", "polarity"], "no label column 'polarity'"),
        ({"train.tsv": "sentence\nfine\n"}, [], "train.tsv: no label column"),
        (
            {"train.tsv": "sentence\tlabel\ngood\t1\nbad\t0\n", "test.tsv": "sentence\tlabel\nmeh\t2\n"},
            [],
            "test.tsv:2",
        ),
        ({"rt/x.pos": b"caf\xe9\n", "rt/x.neg": b"bad\n"}, [], "x.pos:1: not valid utf-8"),
        ({"train.tsv": "sentence\tlabel\ngood\t1\n"}, ["--cv_folds", "3", "--test_file", "train.tsv"], "--cv_folds"),
    ],
    ids=["label-column-named", "label-column-missing", "unknown-test-label", "undeclared-latin1", "cv-with-test"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, files, extra, expected):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    train = tmp_path / ("rt" if "rt/x.pos" in files else "train.tsv")
    argv = ["--train_file", str(train), "--output_dir", str(tmp_path / "out"), "--do_train"]
    if "test.tsv" in files:
        argv += ["--test_file", str(tmp_path / "test.tsv"), "--do_predict"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train_sequence_classification.py", *argv, *extra, *COMMON])
    assert script.cli() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and expected in last_line


def test_empty_sentences_are_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\n \t0\nbad\t0\n\t1\n")
    raw = script.read_splits(script.DataArguments(train_file=str(tmp_path / "train.tsv")), label_names=None)
    assert raw["train"]["text"] == ["good", "bad"]
    assert "skipped 2 empty sentence(s)" in caplog.text
