"""bench/downstream.py without training anything: the command of each initialisation, result rows merged into the
JSON, parallel runs, and a run stopped at the deadline reported as unfinished (never as a result)."""

import json

import pytest

from tests.conftest import load_bench_script


# Stands in for a training script: writes the run_info.json the driver reads, or sleeps past the deadline.
FAKE_SCRIPT = """
import json, sys, time
from pathlib import Path
args = sys.argv[1:]
output_dir = Path(args[args.index("--output_dir") + 1])
if "--sleep" in args:
    time.sleep(60)
output_dir.mkdir(parents=True, exist_ok=True)
metrics = {"test_accuracy": 0.5 + 0.1 * ("--model_name_or_path" in args), "eval_accuracy": 0.4}
(output_dir / "run_info.json").write_text(json.dumps({"metrics": metrics}))
"""


@pytest.fixture(scope="module")
def downstream():
    return load_bench_script("downstream")


def namespace(**overrides):
    import argparse

    return argparse.Namespace(
        **{
            "runs_dir": "runs/x",
            "device": "cpu",
            "pretrained_lm": "lm",
            "extra": [],
            "overrides": "",
            "tagger_overrides": "",
            "variant": "",
            "adaptation_epochs": 2,
            "cv_shards": 1,
            "task_vocabulary": False,
            **overrides,
        }
    )


def test_each_init_changes_only_the_initialisation(downstream):
    commands = {init: downstream.command_for("sst2", init, namespace()) for init in downstream.INITS}
    assert "--model_name_or_path" not in commands["scratch"] and "--config_name" not in commands["scratch"]
    lm_based = {init: commands[init] for init in ("scratch-lm", "pretrained", "ulmfit", "adapted")}
    for command in lm_based.values():
        overrides = command[command.index("--config_overrides") + 1]
        # The LM fixes architecture and dropout; pooling is ULMFiT's concat for every LM-based run.
        assert overrides == "classifier_pooling=concat"
        assert "--learning_rate" in command
    assert lm_based["scratch-lm"][-4:] == ["--config_name", "lm", "--tokenizer_name", "lm"]
    assert lm_based["pretrained"][-2:] == ["--model_name_or_path", "lm"]
    assert lm_based["ulmfit"][-6:] == [
        "--model_name_or_path", "lm", "--layerwise_lr_decay", "2.6", "--gradual_unfreezing", "true",
    ]  # fmt: skip
    assert lm_based["adapted"][-4:] == ["--model_name_or_path", "lm", "--lm_adaptation_epochs", "2"]
    for init, command in lm_based.items():  # a word-level LM mapped onto the task's vocabulary, control included
        mapped = downstream.command_for("sst2", init, namespace(task_vocabulary=True))
        assert mapped == [*command, "--task_vocabulary", "true"]
    assert "--task_vocabulary" not in downstream.command_for("sst2", "scratch", namespace(task_vocabulary=True))
    tagger = downstream.command_for("wnut17", "pretrained", namespace(device="cuda"))
    assert tagger[tagger.index("--config_overrides") + 1] == ""  # replaces the file's BiLSTM architecture
    assert tagger[tagger.index("--label_sub_token") + 1] == "last"
    assert tagger[tagger.index("--use_cpu") + 1] == "false"


def test_tagger_overrides_reach_only_the_taggers(downstream):
    args = namespace(overrides="layer_mix=true", tagger_overrides="use_crf=true")
    for init in ("scratch", "pretrained"):
        tagger, classifier = (downstream.command_for(name, init, args) for name in ("ud_ewt_upos", "sst2"))
        tagger_overrides = tagger[tagger.index("--config_overrides") + 1].split(",")
        classifier_overrides = classifier[classifier.index("--config_overrides") + 1].split(",")
        assert {"layer_mix=true", "use_crf=true"} <= set(tagger_overrides)
        assert "layer_mix=true" in classifier_overrides and "use_crf=true" not in classifier_overrides


def test_rows_merge_and_a_run_past_the_deadline_is_not_a_result(downstream, tmp_path, monkeypatch, capsys):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_SCRIPT)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"config_overrides": "hidden_size=8,dropout=0.5"}))
    spec = {**downstream.BENCHMARKS["sst2"], "script": str(script), "config": str(config)}
    monkeypatch.setattr(downstream, "BENCHMARKS", {"sst2": spec, "slow": {**spec}})
    results = tmp_path / "rows.json"
    results.write_text(json.dumps([{"benchmark": "sst2", "init": "scratch", "value": 0.1}]))  # replaced below
    common = ["--pretrained_lm", "lm", "--jobs", "2", "--runs_dir", str(tmp_path / "runs"), "--results", str(results)]
    downstream.main(["--only", "sst2", "--init", "scratch", "pretrained", *common])
    rows = {(row["benchmark"], row["init"]): row for row in json.loads(results.read_text())}
    assert rows.keys() == {("sst2", "scratch"), ("sst2", "pretrained")}
    assert rows["sst2", "scratch"]["value"] == 0.5 and rows["sst2", "pretrained"]["value"] == pytest.approx(0.6)
    assert rows["sst2", "pretrained"]["dev"] == 0.4

    with pytest.raises(SystemExit, match=r"not finished: slow \(scratch\)"):
        downstream.main(
            ["--only", "slow", "--init", "scratch", *common, "--deadline_minutes", "0.02", "--", "--sleep"]
        )
    assert "[deadline] slow (scratch)" in capsys.readouterr().out
    assert {(row["benchmark"], row["init"]) for row in json.loads(results.read_text())} == set(rows)


def test_overrides_and_variants_add_to_every_init(downstream):
    args = namespace(overrides="use_crf=true", variant="crf")
    scratch = downstream.command_for("wnut17", "scratch", args)
    assert scratch[scratch.index("--config_overrides") + 1].endswith("dropout=0.3,use_crf=true")
    assert scratch[scratch.index("--output_dir") + 1] == "runs/x/wnut17-scratch-crf"
    pretrained = downstream.command_for("wnut17", "pretrained", args)
    assert pretrained[pretrained.index("--config_overrides") + 1] == "use_crf=true"


# Stands in for a cross-validating script: fold k scores 0.7 + k / 100, for the folds it is given.
FAKE_CV_SCRIPT = """
import json, sys
from pathlib import Path
args = sys.argv[1:]
output_dir = Path(args[args.index("--output_dir") + 1])
folds = [int(a) for a in args[args.index("--cv_fold_indices") + 1 :] if a.isdigit()]
metrics = {f"fold_{k}_test_accuracy": 0.7 + k / 100 for k in folds}
metrics["cv_accuracy_mean"] = sum(metrics.values()) / len(folds)
output_dir.mkdir(parents=True, exist_ok=True)
(output_dir / "run_info.json").write_text(json.dumps({"metrics": metrics}))
"""


def test_cv_shards_spread_the_folds_and_merge_into_one_row(downstream, tmp_path, monkeypatch):
    script = tmp_path / "fake_cv.py"
    script.write_text(FAKE_CV_SCRIPT)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"cv_folds": 5, "config_overrides": "hidden_size=8"}))
    spec = {**downstream.BENCHMARKS["rt_polarity"], "script": str(script), "config": str(config)}
    monkeypatch.setattr(downstream, "BENCHMARKS", {"rt_polarity": spec})
    commands = [downstream.command_for("rt_polarity", "scratch", namespace(cv_shards=2), shard) for shard in (0, 1)]
    assert [command[command.index("--cv_fold_indices") + 1 :] for command in commands] == [["0", "2", "4"], ["1", "3"]]
    results = tmp_path / "rows.json"
    argv = ["--only", "rt_polarity", "--init", "scratch", "--cv_shards", "2", "--jobs", "2"]
    downstream.main([*argv, "--runs_dir", str(tmp_path / "runs"), "--results", str(results)])
    [row] = json.loads(results.read_text())
    scores = [0.7 + k / 100 for k in range(5)]
    assert [row["metrics"][f"fold_{k}_test_accuracy"] for k in range(5)] == pytest.approx(scores)
    assert row["value"] == pytest.approx(sum(scores) / 5)
    assert row["std"] == pytest.approx(0.0158114, abs=1e-6)  # sample std of 0.70 .. 0.74
    assert row["command"].count("--cv_fold_indices") == 2
    assert sorted(path.name for path in (tmp_path / "runs").iterdir() if path.is_dir()) == [
        "rt_polarity-scratch-shard0", "rt_polarity-scratch-shard1",
    ]  # fmt: skip
