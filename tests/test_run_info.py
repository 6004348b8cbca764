"""run_info.json and the recorded command: credentials are blanked, every other option survives to be re-run."""

import json
import shlex
import sys
from dataclasses import dataclass

import pytest

from rnn_lm_hf import RNNLMConfig, RNNLMForTokenClassification
from rnn_lm_hf.model_card import write_model_card
from rnn_lm_hf.run_info import command_line, is_secret, public_arguments, redact, save_run_info
from rnn_lm_hf.tokenization import train_tokenizer


KEPT = {"tokenizer_kind": "bpe", "tokenizer_name": "runs/lm", "tokenizer_vocab_size": 500, "label_sub_token": "last"}
SECRETS = {"hub_token": "abc123456789", "token": "t0k3n-value", "password": "hunter2hunter2", "api_key": "k3y-value"}


@dataclass
class Options:
    tokenizer_kind: str = KEPT["tokenizer_kind"]
    tokenizer_name: str = KEPT["tokenizer_name"]
    tokenizer_vocab_size: int = KEPT["tokenizer_vocab_size"]
    label_sub_token: str = KEPT["label_sub_token"]
    hub_token: str = SECRETS["hub_token"]
    token: str = SECRETS["token"]
    password: str = SECRETS["password"]
    api_key: str = SECRETS["api_key"]


ARGV = [*(f"--{key}={value}" for key, value in KEPT.items()), *(x for k, v in SECRETS.items() for x in (f"--{k}", v))]


@pytest.mark.parametrize("name", ["token", "hub_token", "push_to_hub_token", "password", "api_key", "secret"])
def test_credential_names_are_secret(name):
    assert is_secret(name) and is_secret(f"--{name}")


@pytest.mark.parametrize("name", [*KEPT, "token_column", "label_all_tokens", "include_num_input_tokens_seen"])
def test_options_that_only_mention_tokens_are_not(name):
    assert not is_secret(name)


def test_public_arguments_keep_tokenizer_options_and_drop_secrets():
    public = public_arguments(Options())
    assert {key: public[key] for key in KEPT} == KEPT
    assert not set(SECRETS) & set(public)


def test_command_line_keeps_tokenizer_options_and_blanks_secrets(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    command = command_line(ARGV)
    parts = shlex.split(command)
    for key, value in KEPT.items():
        assert f"--{key}={value}" in parts
    for key, value in SECRETS.items():
        assert value not in command
        assert parts[parts.index(f"--{key}") + 1] == "***"


def test_model_card_shows_the_tokenizer_options(tmp_path, monkeypatch):
    tokenizer = train_tokenizer(["Tom works for Google", "we flew to Paris"])
    model = RNNLMForTokenClassification(RNNLMConfig(vocab_size=len(tokenizer), hidden_size=8, num_labels=2))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    save_run_info(
        tmp_path,
        task="token-classification",
        command=command_line(ARGV),
        arguments=public_arguments(Options()),
        metrics={"eval_f1": 0.5},
        dataset="tiny",
        evaluation_protocol="entity F1",
    )
    card = write_model_card(tmp_path).read_text()
    recorded = json.loads((tmp_path / "run_info.json").read_text())
    assert recorded["arguments"]["tokenizer_kind"] == "bpe"
    assert (
        "--tokenizer_kind=bpe" in card and "--label_sub_token=last" in card and "| `tokenizer_kind` | `bpe` |" in card
    )
    assert not any(value in card for value in SECRETS.values())


def test_redact_blanks_credential_flags_only():
    text = redact("rnn-lm train --tokenizer_kind word --hub_token abcdefgh1234 --password=hunter2hunter2")
    assert text == "rnn-lm train --tokenizer_kind word --hub_token <redacted> --password=<redacted>"
