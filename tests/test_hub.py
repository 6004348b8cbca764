"""Model cards and Hub publishing: card metadata, a push/load round trip through a local Hub, offline reload, bad input.

The Hub is `tests/hub_server.py`, a stdlib server on 127.0.0.1 speaking the HTTP API the real `huggingface_hub` client
uses. Publishing runs in-process with the real client: only the module constants that huggingface_hub reads from the
environment at import are set as that environment would set them (conftest.py imports it offline): `HF_HUB_OFFLINE`,
`ENDPOINT` and, for the LFS path, `HF_HUB_DISABLE_XET`. Loading by repo id runs in fresh processes with their own
environment and without rnn_lm_hf, as a user would. The code in docs/hub.md (perplexity with a plain Trainer, a push
rehearsed against the local Hub) runs here as written.
"""

import ast
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import pipeline

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification
from rnn_lm_hf.cli import main
from rnn_lm_hf.hub import PublishError, publish, validate_folder
from rnn_lm_hf.model_card import write_model_card
from rnn_lm_hf.run_info import save_run_info
from rnn_lm_hf.tokenization import train_tokenizer
from tests.conftest import TINY_TEXT
from tests.hub_server import HubServer


REPO_ROOT = Path(__file__).resolve().parents[1]
# Shaped like a real user access token (`hf_` + 34 characters), so the leak checks would catch a real one.
FAKE_TOKEN = "hf_" + "T0kenForTestsOnly" * 2
COMMAND = "python training/train_clm.py --dataset_name tiny --config_overrides hidden_size=24 --max_steps 6"
PROMPT = "the cat sat"
# What a published causal-LM repo holds: the Hub's own .gitattributes plus exactly the validated files.
EXPECTED_REPO_FILES = {
    ".gitattributes",
    "README.md",
    "all_results.json",
    "config.json",
    "configuration_rnn_lm.py",
    "generation_config.json",
    "model.safetensors",
    "modeling_rnn_lm.py",
    "run_info.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def stream_loss(model: RNNLMForCausalLM, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A tiny LSTM LM trained for a few steps, saved like a training script's output folder, with its card."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "clm-lstm-tiny"
    tokenizer = train_tokenizer(TINY_TEXT, kind="word")
    config = RNNLMConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2, dropout=0.1)
    model = RNNLMForCausalLM(config)
    stream = torch.tensor([tokenizer(" ".join(TINY_TEXT[:4])).input_ids])
    train, validation, test = stream[:, :24], stream[:, 24:36], stream[:, 36:]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(6):
        loss = model(train, labels=train).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    eval_loss, test_loss = stream_loss(model, validation), stream_loss(model, test)
    metrics = {
        "epoch": 6.0,
        "train_loss": loss.item(),
        "train_runtime": 0.5,
        "eval_loss": eval_loss,
        "eval_perplexity": math.exp(eval_loss),
        "eval_runtime": 0.01,
        "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss),
    }
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "all_results.json").write_text(json.dumps(metrics, indent=4))  # as Trainer.save_metrics("all")
    save_run_info(
        folder,
        task="causal-lm",
        command=COMMAND,
        arguments={"learning_rate": 0.01, "max_steps": 6, "seed": 0, "config_overrides": "hidden_size=24"},
        metrics=metrics,
        dataset="tiny",
        evaluation_protocol="stateful stream perplexity over the whole validation/test split, one stream, bptt 12",
        wall_time_s=1.5,
    )
    # Left by training runs, never published: a checkpoint and a pickle that can hold a token.
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "checkpoint-6").mkdir()
    (folder / "checkpoint-6" / "optimizer.pt").write_bytes(b"state")
    write_model_card(folder, repo_id="org/clm-lstm-tiny")
    return folder


@pytest.fixture
def model_dir(trained_dir, tmp_path) -> Path:
    """A private copy for tests that change the folder."""
    return Path(shutil.copytree(trained_dir, tmp_path / "model"))


@pytest.fixture
def hub():
    with HubServer(token=FAKE_TOKEN) as server:  # stopped at teardown
        yield server


@pytest.fixture
def online(hub, monkeypatch, tmp_path) -> HubServer:
    """In-process publishing against `hub`: the environment a user sets, plus its import-time constants."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # hf_xet writes its logs there, not in ~/.cache
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    return hub


def digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


def subprocess_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": "", **overrides})
    return env


def run_python(code_or_args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *code_or_args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


# ------------------------------------------------------------------------------------------- 1. the card


def test_card_parses_and_model_index_equals_the_run_metrics(trained_dir):
    text = (trained_dir / "README.md").read_text()
    card = ModelCard(text)  # raises on invalid metadata or model-index
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert data.license == "apache-2.0"
    assert data.datasets == ["tiny"]
    assert set(data.metrics) == {"loss", "perplexity"}
    assert {"rnn-lm-hf", "lstm", "custom_code"} <= set(data.tags)
    saved = json.loads((trained_dir / "all_results.json").read_text())
    prefix = {"validation": "eval", "test": "test"}
    got = {f"{prefix[r.dataset_split]}_{r.metric_type}": r.metric_value for r in data.eval_results}
    # Exactly the evaluation numbers of the metrics file: no runtimes, epochs or training loss.
    assert got == {key: saved[key] for key in ("eval_loss", "eval_perplexity", "test_loss", "test_perplexity")}
    assert {r.task_type for r in data.eval_results} == {"text-generation"}
    # The prose carries the real command, numbers, protocol, architecture and loading code.
    assert f"```bash\n{COMMAND}\n```" in text
    for key in got:
        assert f"| {saved[key]:.4f} |" in text
    assert "stateful stream perplexity" in text
    assert "| Parameters |" in text and "| Layers | 2 |" in text and "| Hidden size | 24 |" in text
    assert 'AutoModelForCausalLM.from_pretrained("org/clm-lstm-tiny", trust_remote_code=True)' in text
    assert "model.generate(" in text
    assert "@article{hochreiter1997long" in text and "@article{zaremba2014recurrent" in text


@pytest.mark.parametrize(
    ("change", "cited", "not_cited"),
    [
        ({}, [], ["merity2018", "howard2018", "grave2017"]),
        ({"config": {"weight_drop": 0.5}}, ["merity2018"], ["howard2018"]),
        ({"arguments": {"nt_asgd": True}}, ["merity2018"], ["howard2018"]),
        ({"arguments": {"gradual_unfreezing": True}}, ["howard2018"], ["merity2018"]),
        ({"config": {"softmax_cutoffs": [3]}}, ["grave2017"], ["merity2018"]),
    ],
    ids=["plain", "weight-drop", "nt-asgd", "gradual-unfreezing", "adaptive-softmax"],
)
def test_card_cites_awd_lstm_ulmfit_and_the_adaptive_softmax_where_used(model_dir, change, cited, not_cited):
    """AWD-LSTM (Merity et al. 2018) for its regularisers and NT-ASGD, ULMFiT (Howard & Ruder 2018) for its
    fine-tuning tricks, Grave et al. 2017 for an LM's adaptive softmax: cited when the run's config or arguments use
    them, and only then."""
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, **change.get("config", {})}))
    run = json.loads((model_dir / "run_info.json").read_text())
    run["arguments"] = {**run["arguments"], **change.get("arguments", {})}
    (model_dir / "run_info.json").write_text(json.dumps(run))
    text = write_model_card(model_dir).read_text()
    for key in cited:
        assert f"{{{key}" in text, key
    for key in not_cited:
        assert f"{{{key}" not in text, key


def test_card_counts_the_stored_parameters(trained_dir):
    model = RNNLMForCausalLM.from_pretrained(trained_dir)
    unique = sum(p.numel() for p in model.parameters())  # tied weights counted once, as they are stored
    assert f"({unique:,})" in (trained_dir / "README.md").read_text()


@pytest.mark.parametrize(
    ("model_class", "task", "pipeline_tag", "metrics"),
    [
        (
            RNNLMForTokenClassification,
            "token-classification",
            "token-classification",
            {"eval_f1": 0.5, "eval_loss": 1.0},
        ),
        (RNNLMForSequenceClassification, "sequence-classification", "text-classification", {"eval_accuracy": 0.75}),
    ],
)
def test_card_for_classification_heads(tmp_path, model_class, task, pipeline_tag, metrics):
    tokenizer = train_tokenizer(TINY_TEXT, kind="word")
    labels = {0: "O", 1: "B-X", 2: "I-X"} if task == "token-classification" else {0: "neg", 1: "pos"}
    config = RNNLMConfig(
        vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, bidirectional=True, id2label=labels
    )
    model_class(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    save_run_info(
        tmp_path, task=task, command="python x.py", arguments={}, metrics=metrics, dataset="d", evaluation_protocol="p"
    )
    text = write_model_card(tmp_path).read_text()
    card = ModelCard(text)
    assert card.data.pipeline_tag == pipeline_tag
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        k[len("eval_") :]: v for k, v in metrics.items()
    }
    assert ", ".join(labels.values()) in text
    assert f"{model_class.__name__}" in text and "bidirectional LSTM" in text
    assert "@article{schuster1997bidirectional" in text
    validate_folder(tmp_path)  # no generation config needed for these heads


def test_card_without_results_is_refused(model_dir):
    info = json.loads((model_dir / "run_info.json").read_text())
    save_run_info(model_dir, **{**info, "metrics": {"train_loss": 1.0, "eval_runtime": 3.0}})
    (model_dir / "all_results.json").unlink()
    with pytest.raises(ValueError, match="no evaluation metrics"):
        write_model_card(model_dir)


def test_card_refuses_disagreeing_metrics_files(model_dir):
    (model_dir / "all_results.json").write_text(json.dumps({"eval_loss": 123.0}))
    with pytest.raises(ValueError, match="disagree on eval_loss"):
        write_model_card(model_dir)


def test_card_command_regenerates_the_card(model_dir, capsys):
    (model_dir / "README.md").unlink()
    assert main(["card", str(model_dir), "--repo_id", "someone/else"]) == 0
    assert 'from_pretrained("someone/else", trust_remote_code=True)' in (model_dir / "README.md").read_text()
    assert main(["check", str(model_dir)]) == 0
    assert set(capsys.readouterr().out.split()) >= {"README.md", "model.safetensors"}


@pytest.mark.parametrize("spelling", [["--repo-id", "old/style"], ["--repo-id=old/style"]])
def test_old_hyphenated_hub_flags_still_work_with_a_warning(model_dir, capsys, spelling):
    assert main(["card", str(model_dir), *spelling]) == 0
    assert "--repo-id is deprecated, use --repo_id" in capsys.readouterr().err
    assert 'from_pretrained("old/style", trust_remote_code=True)' in (model_dir / "README.md").read_text()


def plain_trainer_folder(model_dir: Path) -> Path:
    """What plain `Trainer` leaves: config, weights, tokenizer and its metrics files, no run_info.json and no card."""
    for name in ("run_info.json", "README.md"):
        (model_dir / name).unlink()
    return model_dir


def test_card_for_a_plain_trainer_folder_says_what_is_unknown(model_dir, capsys):
    folder = plain_trainer_folder(model_dir)
    assert main(["card", str(folder)]) == 0
    card = ModelCard((folder / "README.md").read_text())
    training = card.text.split("## Training data and recipe")[1].split("\n## ")[0]
    assert " ".join(training.split()) == (
        "This folder was saved without a run record (by a plain `Trainer` or `save_pretrained`), so its training "
        "data, command, arguments and evaluation protocol are not known. The results below come from the "
        "Trainer's metrics (`all_results.json`)."
    )
    assert "**unknown**" not in card.text and "trained on\n**an unrecorded dataset**" in card.text
    assert "**Evaluation protocol:** not recorded" in card.text
    # Every file the card names is in the folder: no run_info.json, no eval_results.json.
    named = set(re.findall(r"`([\w.-]+\.(?:json|py|safetensors))`", card.text))
    assert "all_results.json" in named and "run_info.json" not in named
    assert all((folder / name).is_file() for name in named), named
    assert card.data.datasets is None  # no link to a Hub dataset that is not the training data
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {("unknown", "unknown")}
    validate_folder(folder)
    assert "name it with --dataset NAME" in capsys.readouterr().out


def test_card_dataset_flag_names_the_training_data(model_dir, capsys):
    folder = plain_trainer_folder(model_dir)
    assert main(["card", str(folder), "--dataset", "Salesforce/wikitext"]) == 0
    assert "--dataset" not in capsys.readouterr().out  # nothing left to name
    card = ModelCard((folder / "README.md").read_text())
    assert card.data.datasets == ["Salesforce/wikitext"]
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {("Salesforce/wikitext",) * 2}
    assert "trained on\n**Salesforce/wikitext**" in card.text and "Trained on **Salesforce/wikitext**." in card.text
    assert "training command, arguments and evaluation protocol are not known" in " ".join(card.text.split())
    assert "training data," not in card.text
    validate_folder(folder)


def test_card_dataset_flag_replaces_the_recorded_name(model_dir):
    assert main(["card", str(model_dir), "--dataset", "ptb_text_only"]) == 0
    card = ModelCard((model_dir / "README.md").read_text())
    assert card.data.datasets == ["ptb_text_only"] and "**ptb_text_only**" in card.text and "**tiny**" not in card.text
    assert f"```bash\n{COMMAND}\n```" in card.text and "`run_info.json`" in card.text  # the recorded run, as before
    validate_folder(model_dir)


# ------------------------------------------------------------------------------------------- 2 + 3. round trip

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["rnn_lm_hf"] = None  # a user with transformers and torch only
    try:
        import rnn_lm_hf  # noqa: F401
        raise SystemExit("rnn_lm_hf is importable")
    except ImportError:
        pass
    import huggingface_hub
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    repo_id, expected = sys.argv[1], json.load(open(sys.argv[2]))
    model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
    ids = model.generate(torch.tensor([expected["prompt_ids"]]), max_new_tokens=8, do_sample=False)
    assert ids[0].tolist() == expected["greedy_ids"], (ids[0].tolist(), expected["greedy_ids"])
    generator = pipeline("text-generation", model=repo_id, trust_remote_code=True)
    text = generator(expected["prompt"], max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text == expected["text"], (text, expected["text"])
    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        print(json.dumps(sorted(huggingface_hub.list_repo_files(repo_id))))  # the listing the endpoint serves
    """
)


# huggingface_hub 2.4's own LFS upload passes `data=` to httpx2, which warns.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload:DeprecationWarning")
def test_push_then_load_by_repo_id_online_and_offline(trained_dir, tmp_path, online, monkeypatch, capsys):
    model = RNNLMForCausalLM.from_pretrained(trained_dir).eval()
    tokenizer = train_tokenizer(TINY_TEXT, kind="word")
    prompt_ids = tokenizer(PROMPT).input_ids
    expected = {
        "prompt": PROMPT,
        "prompt_ids": prompt_ids,
        "greedy_ids": model.generate(torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False)[0].tolist(),
        "text": pipeline("text-generation", model=model, tokenizer=tokenizer)(
            PROMPT, max_new_tokens=8, do_sample=False
        )[0]["generated_text"],
    }
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    before = digest(trained_dir)
    repo_id = "org/clm-lstm-tiny"
    # The weights go up as an LFS object, as on the Hub; huggingface_hub takes the LFS path (not Xet) when
    # HF_HUB_DISABLE_XET=1, which it reads at import.
    online.lfs_patterns = ("*.safetensors",)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    assert main(["push", str(trained_dir), repo_id]) == 0
    assert f"Published {repo_id}" in capsys.readouterr().out
    assert digest(trained_dir) == before
    assert online.list_files(repo_id) == EXPECTED_REPO_FILES
    assert "model.safetensors" in online.repos[repo_id].resolve("main").lfs_paths
    assert [r.path.split("?")[0] for r in online.requests if r.method == "PUT"] == [
        f"/lfs/upload/{hashlib.sha256((trained_dir / 'model.safetensors').read_bytes()).hexdigest()}"
    ]
    assert online.file(repo_id, "model.safetensors") == (trained_dir / "model.safetensors").read_bytes()

    # A user with transformers and torch only, no token (public repo), a fresh cache, a fresh process.
    load_env = subprocess_env(tmp_path, HF_ENDPOINT=online.url)
    loaded = run_python(["-c", LOAD_SCRIPT, repo_id, str(tmp_path / "expected.json")], load_env, tmp_path)
    assert set(json.loads(loaded.stdout.strip().splitlines()[-1])) == EXPECTED_REPO_FILES

    # Offline, from the cache the first load filled: no request reaches the Hub.
    requests_before = len(online.requests)
    offline_env = subprocess_env(tmp_path, HF_ENDPOINT=online.url, HF_HUB_OFFLINE="1")
    run_python(["-c", LOAD_SCRIPT, repo_id, str(tmp_path / "expected.json")], offline_env, tmp_path)
    assert len(online.requests) == requests_before


def test_private_repo_on_a_branch(model_dir, online):
    url = publish(model_dir, "org/private-tiny", private=True, revision="v0.1", commit_message="first release")
    repo = online.repos["org/private-tiny"]
    assert repo.private
    assert url.startswith(f"{online.url}/org/private-tiny/commit/")
    assert online.list_files("org/private-tiny", "v0.1") == EXPECTED_REPO_FILES
    assert online.list_files("org/private-tiny", "main") == {".gitattributes"}  # the branch took the commit
    assert repo.commits[repo.branches["v0.1"]].message == "first release"
    with pytest.raises(RepositoryNotFoundError):  # invisible without the token
        HfApi(endpoint=online.url, token=False).model_info("org/private-tiny")
    # Publishing the same folder again changes nothing: the unchanged files are skipped, no empty commit.
    publish(model_dir, "org/private-tiny", private=True, revision="v0.1")
    assert repo.branches["v0.1"] == url.rsplit("/", 1)[-1]


def test_private_flag_never_publishes_into_an_existing_public_repo(model_dir, online):
    HfApi(endpoint=online.url, token=FAKE_TOKEN).create_repo("org/public")
    with pytest.raises(ValueError, match="already exists and is public"):
        publish(model_dir, "org/public", private=True)
    assert online.list_files("org/public") == {".gitattributes"}


def test_token_from_environment_is_used_but_written_nowhere(model_dir, online, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    write_model_card(model_dir, repo_id="org/tiny")  # with HF_TOKEN set
    publish(model_dir, "org/tiny")
    assert {r.authorization for r in online.requests if r.method in ("POST", "PUT")} == {f"Bearer {FAKE_TOKEN}"}
    for path in model_dir.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for content in online.repos["org/tiny"].resolve("main").files.values():
        assert FAKE_TOKEN.encode() not in content
    captured = capfd.readouterr()
    assert FAKE_TOKEN not in caplog.text + captured.out + captured.err


# ------------------------------------------------------------------------------------------- 4. bad input


def drop(name: str):
    return lambda folder: (folder / name).unlink()


def edit_json(name: str, change):
    def apply(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))

    return apply


def card_without_results(folder: Path) -> None:
    """The same card with its metadata cut before `model-index:` (the last key), as a hand-edited card might be."""
    text = (folder / "README.md").read_text()
    metadata_end = text.index("\n---\n", 4)
    (folder / "README.md").write_text(text[:metadata_end].split("\nmodel-index:")[0] + text[metadata_end:])


def reevaluated(folder: Path) -> None:
    """New metrics in both metrics files, the card left as it was."""
    edit_json("all_results.json", lambda metrics: metrics.update(eval_perplexity=1.5))(folder)
    edit_json("run_info.json", lambda info: info["metrics"].update(eval_perplexity=1.5))(folder)


BAD_FOLDERS = {
    "missing tokenizer": (drop("tokenizer.json"), "tokenizer.json missing"),
    "missing modeling code": (drop("modeling_rnn_lm.py"), "modeling_rnn_lm.py is missing"),
    "missing configuration code": (drop("configuration_rnn_lm.py"), "configuration_rnn_lm.py is missing"),
    "auto_map to a missing class": (
        edit_json("config.json", lambda c: c["auto_map"].update(AutoModelForCausalLM="modeling_rnn_lm.RNNLMForLM")),
        "defines no class RNNLMForLM",
    ),
    "incomplete auto_map": (
        edit_json("config.json", lambda c: c["auto_map"].pop("AutoModelForTokenClassification")),
        "auto_map lacks AutoModelForTokenClassification",
    ),
    "card without results": (card_without_results, "has no results"),
    "no card": (drop("README.md"), "README.md \\(the model card\\) is missing"),
    "missing generation config": (drop("generation_config.json"), "generation_config.json is missing"),
    "missing weights": (drop("model.safetensors"), "model.safetensors is missing"),
    "card from another evaluation": (reevaluated, "README.md results differ from the run's metrics"),
    "token in a file": (
        edit_json("run_info.json", lambda i: i.update(command=i["command"] + " --hub_token " + FAKE_TOKEN)),
        "contain\\(s\\) a Hub access token",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folders_fail_before_any_request(model_dir, online, case):
    break_folder, message = BAD_FOLDERS[case]
    break_folder(model_dir)
    before = digest(model_dir)
    with pytest.raises(ValueError, match=message) as error:
        publish(model_dir, "org/tiny")
    assert "\n" not in str(error.value)  # one problem, one line
    assert online.requests == []
    assert digest(model_dir) == before


def test_several_problems_are_listed_together(model_dir):
    drop("tokenizer.json")(model_dir)
    drop("generation_config.json")(model_dir)
    with pytest.raises(ValueError) as error:
        validate_folder(model_dir)
    assert "tokenizer.json missing" in str(error.value) and "generation_config.json is missing" in str(error.value)


def test_failed_upload_leaves_the_folder_intact(model_dir, online):
    online.refuse_commits = "Storage quota exceeded for org"
    before = digest(model_dir)
    with pytest.raises(PublishError, match="Storage quota exceeded for org.*Nothing in .* was changed"):
        publish(model_dir, "org/tiny")
    assert digest(model_dir) == before
    assert online.list_files("org/tiny") == {".gitattributes"}


def test_command_line_errors_are_one_line(tmp_path, capsys, online):
    assert main(["push", str(tmp_path / "missing"), "org/tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["card", str(tmp_path)]) == 2  # no config.json
    assert "config.json is missing" in capsys.readouterr().err


def test_push_writes_a_card_for_a_folder_without_run_info(model_dir, online, capsys):
    """A folder saved by plain Trainer (config, weights, tokenizer, Trainer's results files) publishes too."""
    for name in ("run_info.json", "README.md"):
        (model_dir / name).unlink()
    assert main(["push", str(model_dir), "org/plain"]) == 0, capsys.readouterr().err
    card = ModelCard((model_dir / "README.md").read_text())
    shown = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    metrics = json.loads((model_dir / "all_results.json").read_text())
    assert shown[("test", "perplexity")] == metrics["test_perplexity"]
    assert "not recorded" in card.text and card.data.pipeline_tag == "text-generation"
    assert {"README.md", "model.safetensors", "all_results.json"} <= online.list_files("org/plain")


def test_card_without_run_info_or_results_names_the_fix(model_dir, capsys):
    for name in ("run_info.json", "README.md", "all_results.json"):
        (model_dir / name).unlink()
    assert main(["card", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no evaluation metrics" in err and "save_metrics" in err


def test_offline_a_repo_id_passes_only_when_the_hub_cache_holds_it(tmp_path, monkeypatch):
    """Offline, `from_pretrained` can load a repo id from the cache and from nowhere else, so the early check lets a
    cached id through and stops an uncached one (bad_inputs row `hub-offline-uncached`)."""
    from rnn_lm_hf.hub import check_model_source

    monkeypatch.chdir(tmp_path)  # no folder named like the id here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        check_model_source("org/rnn-lm")
    (tmp_path / "hub" / "models--org--rnn-lm").mkdir(parents=True)
    assert check_model_source("org/rnn-lm") == "org/rnn-lm"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # online, the Hub itself answers
    assert check_model_source("org/other") == "org/other"


# ------------------------------------------------------------------------------------------- 5. docs/hub.md snippets

DOCS = REPO_ROOT / "docs" / "hub.md"


def doc_blocks(heading: str, language: str = "python") -> list[str]:
    """The code blocks of one section of docs/hub.md (from its heading to the next heading of the same level)."""
    level = heading.split(" ")[0]
    section = DOCS.read_text().split(f"\n{heading}\n")[1].split(f"\n{level} ")[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def spread_lm(vocab_size: int) -> RNNLMForCausalLM:
    """A random LM with widely spread weights, so that per-token losses differ a lot from token to token."""
    torch.manual_seed(0)
    model = RNNLMForCausalLM(RNNLMConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.8)
    return model


def corpus_perplexity(model: RNNLMForCausalLM, examples: list[list[int]]) -> tuple[float, list[tuple[float, int]]]:
    """exp(total NLL / total predicted tokens), each example run alone (no padding), and the per-example sums."""
    sums = []
    with torch.no_grad():
        for ids in examples:
            ids = torch.tensor([ids])
            logits = model(ids).logits[0, :-1]
            sums.append(
                (torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item(), len(ids[0]) - 1)
            )
    return math.exp(sum(nll for nll, _ in sums) / sum(n for _, n in sums)), sums


def trainer_args(tmp_path: Path):
    from transformers import TrainingArguments

    return TrainingArguments(
        str(tmp_path / "out"), per_device_eval_batch_size=2, report_to="none", use_cpu=True, disable_tqdm=True
    )


def test_docs_perplexity_one_liner_on_fixed_length_blocks(tmp_path):
    """The documented `math.exp(metrics["eval_loss"])` after a plain Trainer's evaluate: the corpus perplexity when all
    blocks have the same length, saved where `rnn-lm card` reads it."""
    from datasets import Dataset
    from transformers import Trainer, default_data_collator

    tokenizer = train_tokenizer(TINY_TEXT, kind="word")
    model = spread_lm(len(tokenizer))
    stream = tokenizer(" ".join(TINY_TEXT)).input_ids
    blocks = [stream[i : i + 8] for i in range(0, 40, 8)]  # 5 blocks of 8: the last batch holds one
    eval_dataset = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    trainer = Trainer(model=model, args=trainer_args(tmp_path), eval_dataset=eval_dataset,
                      data_collator=default_data_collator)  # fmt: skip
    (snippet,) = doc_blocks("## Perplexity with plain `Trainer`")[:1]
    namespace = {"trainer": trainer}
    exec(snippet, namespace)
    metrics = namespace["metrics"]
    expected, _ = corpus_perplexity(model, blocks)
    assert metrics["eval_perplexity"] == pytest.approx(expected, rel=1e-5)
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved["eval_perplexity"] == metrics["eval_perplexity"]
    # The plain Trainer folder's card shows it.
    model.save_pretrained(tmp_path / "out")
    tokenizer.save_pretrained(tmp_path / "out")
    card = ModelCard(write_model_card(tmp_path / "out").read_text())
    shown = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert shown[("validation", "perplexity")] == metrics["eval_perplexity"]


def test_docs_token_weighted_perplexity_with_padded_examples(tmp_path):
    """The documented compute_metrics: with left-padded examples of different lengths it equals the corpus perplexity
    of the examples run one by one, where exp(eval_loss) does not; the package's metric gives the same number."""
    import evaluate
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling

    from rnn_lm_hf.metrics import metric_path

    tokenizer = train_tokenizer(TINY_TEXT, kind="word")
    assert tokenizer.padding_side == "left"
    model = spread_lm(len(tokenizer))
    examples = [tokenizer(text).input_ids[:length] for text, length in zip(TINY_TEXT, (3, 9, 12, 2, 7))]
    namespace = {
        "model": model,
        "args": trainer_args(tmp_path),
        "eval_dataset": Dataset.from_dict({"input_ids": examples}),
        "data_collator": DataCollatorForLanguageModeling(tokenizer, mlm=False),
    }
    exec(doc_blocks("## Perplexity with plain `Trainer`")[1], namespace)
    metrics = namespace["metrics"]
    expected, sums = corpus_perplexity(model, examples)
    assert metrics["eval_perplexity"] == pytest.approx(expected, rel=1e-5)
    assert abs(math.exp(metrics["eval_loss"]) / expected - 1) > 0.01  # why the one-liner is not enough here
    columns = namespace["trainer"].predict(namespace["eval_dataset"]).predictions  # (examples, 2): NLL, tokens
    torch.testing.assert_close(torch.tensor(columns), torch.tensor(sums, dtype=torch.float32), rtol=1e-5, atol=1e-4)
    perplexity = evaluate.load(metric_path("perplexity"), keep_in_memory=True)
    result = perplexity.compute(predictions=columns[:, 0].tolist(), references=columns[:, 1].astype(int).tolist())
    assert result["perplexity"] == pytest.approx(metrics["eval_perplexity"], rel=1e-6)


def test_docs_offline_push_from_python(model_dir, tmp_path, monkeypatch, capsys):
    """The documented one-process rehearsal of a push against tests/hub_server.py runs as written."""
    (tmp_path / "runs").mkdir()
    shutil.copytree(model_dir, tmp_path / "runs" / "clm-lstm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    (snippet,) = doc_blocks("### Trying a push offline")
    exec(snippet, {})
    url, files = capsys.readouterr().out.strip().splitlines()[-2:]
    assert url.startswith("http://127.0.0.1:") and "/me/clm-lstm/commit/" in url
    assert set(ast.literal_eval(files)) == EXPECTED_REPO_FILES


def test_docs_offline_push_shell_session(model_dir, tmp_path):
    """The documented two-terminal session, as written: the server script from the checkout's root, then the
    commands with the URL it printed (from a shell where HF_HUB_OFFLINE was set, which the session unsets)."""
    server_script, session = doc_blocks("### Trying a push offline", "bash")
    (tmp_path / "runs").mkdir()
    shutil.copytree(model_dir, tmp_path / "runs" / "clm-lstm")
    # TMPDIR: the session's `mktemp -d` (its throwaway HF_HOME) is made in tmp_path, not left in /tmp.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = subprocess_env(tmp_path, PATH=path, TMPDIR=str(tmp_path))
    # Ctrl-C must reach the server as in a terminal, even when pytest itself was started with SIGINT ignored (as a
    # background job of a non-interactive shell is), a disposition that children would inherit.
    server = subprocess.Popen(
        ["bash", "-c", server_script], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        script = session.replace("http://127.0.0.1:41234", url)
        result = subprocess.run(
            ["bash", "-e", "-c", script], cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        lines = result.stdout.strip().splitlines()
        assert f"Published me/clm-lstm: {url}/me/clm-lstm/commit/" in result.stdout
        listing = next(line for line in lines if line.startswith("['.gitattributes'"))
        assert set(ast.literal_eval(listing)) == EXPECTED_REPO_FILES
        assert lines[-1].startswith("the")  # the pipeline's text, loaded back by repo id
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        assert server.wait(timeout=30) == 0
