"""training/train_token_classification.py on tiny CoNLL and CoNLL-U fixtures: metrics, folder, pipelines, errors."""

import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from rnn_lm_hf.tagging_data import tokenize_and_align_labels
from rnn_lm_hf.tokenization import train_tokenizer
from rnn_lm_hf.training import train_token_classification as script
from tests.conftest import run_hub_code


FIXTURES = Path(__file__).resolve().parent / "fixtures"
NER = FIXTURES / "ner"
TINY_MODEL = "hidden_size=16,embedding_size=12,num_hidden_layers=1,bidirectional=true"
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]
SENTENCE = "Mary works for Acme Corp and lives in New York ."


def ner_args(output_dir, *extra: str) -> list[str]:
    files = [
        "--train_file",
        NER / "train.conll",
        "--validation_file",
        NER / "dev.conll",
        "--test_file",
        NER / "test.conll",
    ]
    flags = ["--config_overrides", TINY_MODEL, "--output_dir", output_dir, "--do_train", "--do_eval", "--do_predict"]
    return [str(a) for a in [*files, *flags, *COMMON, *extra]]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """A BiLSTM tagger trained long enough on the fixture (about 0.5 s) to predict entities."""
    folder = tmp_path_factory.mktemp("tagger")
    metrics = script.main(ner_args(folder, "--max_steps", "60", "--learning_rate", "0.05", "--logging_steps", "20"))
    return folder, metrics


def test_metrics_and_saved_folder(tagger):
    folder, metrics = tagger
    for key in ("train_loss", "eval_f1", "eval_accuracy", "test_f1", "test_precision", "test_recall", "test_accuracy"):
        assert 0 <= metrics[key] < float("inf"), key
    config = json.loads((folder / "config.json").read_text())
    labels = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "O"]  # sorted train tags
    assert config["id2label"] == {str(i): label for i, label in enumerate(labels)}
    assert config["label2id"] == {label: i for i, label in enumerate(labels)}
    assert config["bidirectional"] is True and config["architectures"] == ["RNNLMForTokenClassification"]
    run_info = json.loads((folder / "run_info.json").read_text())
    card = ModelCard((folder / "README.md").read_text())  # the model card, written from the run
    assert card.data.pipeline_tag == "token-classification"
    assert {r.task_type for r in card.data.eval_results} == {"token-classification"}
    assert "RNNLMForTokenClassification" in card.text and "AutoModelForTokenClassification" in card.text
    assert run_info["task"] == "token-classification" and run_info["metrics"]["test_f1"] == metrics["test_f1"]
    predictions = (folder / "test_predictions.conll").read_text().split("\n\n")
    assert predictions[0].splitlines()[0].split(" ")[:2] == (NER / "test.conll").read_text().split("\n")[0].split("\t")


def argmax_tags(model, tokenizer, text: str) -> tuple[list[str], list[tuple[int, int]]]:
    encoded = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoded.pop("offset_mapping")[0].tolist()]
    with torch.no_grad():
        ids = model(**encoded).logits.argmax(-1)[0].tolist()
    return [model.config.id2label[i] for i in ids], offsets


def simple_groups(tags: list[str], offsets: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """transformers' "simple" aggregation: a B- tag or a type change starts a group; O groups are dropped."""
    groups = []
    for tag, (start, end) in zip(tags, offsets):
        prefix, entity_type = (tag[0], tag[2:]) if tag[:2] in ("B-", "I-") else ("I", tag)
        if groups and groups[-1][0] == entity_type and prefix != "B":
            groups[-1][2] = end
        else:
            groups.append([entity_type, start, end])
    return [tuple(group) for group in groups if group[0] != "O"]


def test_pipelines_match_the_models_argmax(tagger):
    folder, _ = tagger
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tags, offsets = argmax_tags(model, tokenizer, SENTENCE)
    assert any(tag != "O" for tag in tags), "the fixture model should find entities"

    per_token = pipeline("token-classification", model=folder, ignore_labels=[])(SENTENCE)
    assert [t["entity"] for t in per_token] == tags
    default = pipeline("token-classification", model=model, tokenizer=tokenizer)(SENTENCE)
    assert [(t["entity"], t["start"]) for t in default] == [(t, s) for t, (s, _) in zip(tags, offsets) if t != "O"]

    grouped = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple")
    groups = grouped(SENTENCE)
    got = [(g["entity_group"], g["start"], g["end"]) for g in groups]
    assert got == simple_groups(tags, offsets)
    # Each group's decoded `word` is its span of the sentence, after the word-level decoder's leading space (which
    # spaces a text-generation pipeline's continuation from its prompt: tests/test_tokenization.py).
    assert [g["word"] for g in groups] == [" " + SENTENCE[start:end] for _, start, end in got]


HUB_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["rnn_lm_hf"] = None  # everything must come from the folder's own code
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
    folder, text = sys.argv[1], sys.argv[2]
    model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = model(**tokenizer(text, return_tensors="pt")).logits.argmax(-1)[0].tolist()
    tags = pipeline("token-classification", model=model, tokenizer=tokenizer, ignore_labels=[])(text)
    assert [t["entity"] for t in tags] == [model.config.id2label[i] for i in ids], (tags, ids)
    print("ok")
    """
)


def test_pipeline_through_hub_code(tagger, tmp_path):
    folder, _ = tagger
    result = run_hub_code(HUB_CODE_SCRIPT, str(folder), SENTENCE, cwd=tmp_path)
    assert result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_conllu_upos_scores_token_accuracy_only(tmp_path, caplog):
    conllu = str(FIXTURES / "tagging" / "tiny.conllu")
    files = ["--train_file", conllu, "--validation_file", conllu, "--conllu_tag", "xpos"]
    flags = ["--config_overrides", TINY_MODEL, "--output_dir", str(tmp_path), "--do_train", "--do_eval"]
    metrics = script.main([*files, *flags, *COMMON, "--max_steps", "3"])
    assert "eval_accuracy" in metrics and "eval_f1" not in metrics
    config = json.loads((tmp_path / "config.json").read_text())
    assert sorted(config["label2id"]) == [".", "NNS", "RB", "VB", "VBP"]
    assert "skipped 1 empty sentence" in caplog.text  # the fixture's block without word lines


def test_bpe_tokenizer_labels_first_subtoken_as_in_running_text(tmp_path):
    metrics = script.main(
        ner_args(tmp_path, "--tokenizer_kind", "bpe", "--tokenizer_vocab_size", "40", "--max_steps", "3")
    )
    assert "test_f1" in metrics
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    words = SENTENCE.split()
    prefix = script.word_prefix(tokenizer)
    split = tokenizer([w if i == 0 else prefix + w for i, w in enumerate(words)], is_split_into_words=True)
    assert split.input_ids == tokenizer(SENTENCE).input_ids  # training sees what the pipeline sees
    assert len(split.input_ids) > len(words)  # sub-words really are split
    model = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    tags, _ = argmax_tags(model, tokenizer, SENTENCE)
    per_token = pipeline("token-classification", model=model, tokenizer=tokenizer, ignore_labels=[])(SENTENCE)
    assert [t["entity"] for t in per_token] == tags


def test_label_sub_token_last_with_bpe(tmp_path, caplog):
    argv = ner_args(tmp_path, "--tokenizer_kind", "bpe", "--tokenizer_vocab_size", "40", "--max_steps", "3")
    with caplog.at_level(logging.INFO):
        metrics = script.main([*argv, "--label_sub_token", "last"])
    for key in ("train_loss", "eval_f1", "eval_accuracy", "test_f1", "test_accuracy"):
        assert 0 <= metrics[key] < float("inf"), key
    assert "read predictions at each word's last sub-token" in caplog.text
    run_info = json.loads((tmp_path / "run_info.json").read_text())
    assert "on the last sub-token of every word" in run_info["evaluation_protocol"]
    # one `token gold predicted` line per word of test.conll, in order
    gold = [block.splitlines() for block in (NER / "test.conll").read_text().strip().split("\n\n")]
    written = [block.splitlines() for block in (tmp_path / "test_predictions.conll").read_text().strip().split("\n\n")]
    assert [len(lines) for lines in written] == [len(lines) for lines in gold]
    for gold_lines, lines in zip(gold, written):
        assert [line.split(" ")[:2] for line in lines] == [line.split("\t") for line in gold_lines]
        assert all(len(line.split(" ")) == 3 for line in lines)
    # the 40-piece BPE splits words, so the labels really moved from first to last pieces
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    prefix = script.word_prefix(tokenizer)
    words = [[w if i == 0 else prefix + w for i, w in enumerate(SENTENCE.split())]]
    tags = [["O"] * len(words[0])]
    label2id = {"O": 0}
    first, last = (
        tokenize_and_align_labels({"tokens": words, "tags": tags}, tokenizer, label2id, label_sub_token=mode)["labels"]
        for mode in ("first", "last")
    )
    assert first != last and sum(y == 0 for y in last[0]) == len(words[0])


def test_bad_label_sub_token_is_a_clear_error(tmp_path, monkeypatch, capsys):
    argv = ["--train_file", str(NER / "train.conll"), "--output_dir", str(tmp_path), "--do_train"]
    monkeypatch.setattr(sys, "argv", ["train_token_classification.py", *argv, "--label_sub_token", "middle", *COMMON])
    assert script.cli() == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: --label_sub_token must be one of first, last, got 'middle'"), last_line
    with pytest.raises(ValueError, match="--label_all_tokens only goes with --label_sub_token first"):
        script.DataArguments(train_file=str(NER / "train.conll"), label_sub_token="last", label_all_tokens=True)


def test_char_tokenizers_are_refused():
    tokenizer = train_tokenizer(["John lives here"], kind="char")
    with pytest.raises(ValueError, match="spaces into tokens"):
        script.word_prefix(tokenizer)


@pytest.mark.parametrize(
    ("train", "test", "expected"),
    [
        ("a\tB-X\nb\tO\tO\n", None, "train.conll:2: 3 column(s), but the first token line has 2"),
        ("a\nb\n", None, "train.conll:1: no tag column"),
        ("a\tB-X\nb\tO\n", "a\tB-Y\n", "test.conll:1: unknown label 'B-Y'"),
    ],
    ids=["mismatched-columns", "missing-tag-column", "unknown-test-label"],
)
def test_bad_data_exits_2_with_one_line(tmp_path, monkeypatch, capsys, train, test, expected):
    (tmp_path / "train.conll").write_text(train)
    argv = ["--train_file", str(tmp_path / "train.conll"), "--output_dir", str(tmp_path / "out"), "--do_train"]
    if test is not None:
        (tmp_path / "test.conll").write_text(test)
        argv += ["--test_file", str(tmp_path / "test.conll"), "--do_predict"]
    monkeypatch.setattr(sys, "argv", ["train_token_classification.py", *argv, *COMMON])
    assert script.cli() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and expected in last_line


def test_unknown_test_label_can_be_mapped(tmp_path):
    (tmp_path / "test.conll").write_text("Mary\tB-MISC\nsings\tO\n")
    data_args = script.DataArguments(
        train_file=str(NER / "train.conll"), test_file=str(tmp_path / "test.conll"), unknown_label="O"
    )
    raw, labels = script.read_splits(data_args, labels=None)
    assert raw["test"]["tags"] == [["O", "O"]] and "B-MISC" not in labels


def test_labels_come_from_the_whole_train_split(tmp_path):
    data_args = script.DataArguments(train_file=str(NER / "train.conll"), max_train_samples=1)
    raw, labels = script.read_splits(data_args, labels=None)
    assert len(raw["train"]) == 1 and labels == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "O"]
