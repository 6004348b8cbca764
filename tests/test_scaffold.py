"""The training scripts' shared command line (`training/scaffold.py`): what a split's file implies, and options that
fail in one line."""

import json
from pathlib import Path

import pytest
from transformers import TrainingArguments

from rnn_lm_hf.training import train_clm, train_sequence_classification
from rnn_lm_hf.training.finetuning import parse_finetuning_args


def clm_training_args(argv: list[str]) -> TrainingArguments:
    return train_clm.parse_arguments(argv)[2]


def test_a_given_file_turns_its_action_on():
    """`rnn-lm train --train_file my.txt --output_dir out` trains (it used to train nothing and fail at the end)."""
    args = clm_training_args(["--train_file", "my.txt", "--output_dir", "out"])
    assert args.do_train and not args.do_eval and not args.do_predict
    args = clm_training_args(["--train_file", "my.txt", "--validation_file", "v.txt", "--test_file", "t.txt"])
    assert args.do_train and args.do_eval and args.do_predict
    sentiment = Path(__file__).parent / "fixtures" / "sentiment"
    argv = ["--train_file", str(sentiment / "train.tsv"), "--test_file", str(sentiment / "test.jsonl")]
    _, _, _, training_args, _ = parse_finetuning_args(train_sequence_classification.DataArguments, argv)
    assert training_args.do_train and training_args.do_predict and not training_args.do_eval


@pytest.mark.parametrize("explicit", [["--do_train", "false"], ["--do_train=False"]])
def test_an_explicit_action_is_kept(explicit):
    assert not clm_training_args(["--train_file", "my.txt", *explicit]).do_train


def test_a_config_file_key_is_explicit_and_flags_override_it(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"train_file": "my.txt", "do_train": False, "learning_rate": 0.1}))
    assert not clm_training_args([str(recipe)]).do_train
    args = clm_training_args([str(recipe), "--learning_rate", "0.5", "--do_train", "true"])
    assert args.do_train and args.learning_rate == 0.5


def test_a_config_file_with_an_unknown_key_names_it(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"train_file": "my.txt", "hidden_size": 64}))
    with pytest.raises(
        ValueError, match="--hidden_size is a model config field.*--config_overrides hidden_size=VALUE"
    ):
        clm_training_args([str(recipe)])


def test_hyphenated_aliases_still_parse():
    assert clm_training_args(["--train_file", "my.txt", "--learning-rate", "0.25"]).learning_rate == 0.25
