"""Model cards and Hub publishing for saved rnn-lm-hf folders (package code: never shipped as remote code).

    python -m rnn_lm_hf.hub card runs/clm-lstm [--repo-id org/name]     # (re)write runs/clm-lstm/README.md
    python -m rnn_lm_hf.hub check runs/clm-lstm                          # what `push` would upload, or what is wrong
    python -m rnn_lm_hf.hub push runs/clm-lstm org/name [--private] [--revision BRANCH]

A training run leaves `config.json`, `model.safetensors`, the two code files, the tokenizer, `generation_config.json`
(causal LM) and `run_info.json` in its output folder. `write_model_card` turns them into `README.md`; `publish` checks
that the folder loads as Hub code (`validate_folder`) and only then talks to the Hub, through `huggingface_hub`
(`HF_ENDPOINT` and `HF_TOKEN` or the saved login are honoured; tokens are never passed on the command line).
"""

import argparse
import ast
import json
import logging
import math
import os
import re
import struct
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from .modeling_rnn_lm import auto_map
from .run_info import RUN_INFO_FILE, is_secret, load_run_info


logger = logging.getLogger(__name__)


TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md.j2"
CARD_FILE = "README.md"
METRICS_FILE = "all_results.json"  # what Trainer.save_metrics("all", ...) writes
# Trainer.save_metrics(split) files, read (in this order) when a folder has no run_info.json.
RESULTS_FILES = ("eval_results.json", "test_results.json", METRICS_FILE)
WEIGHTS_FILE, WEIGHTS_INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Optional files a tokenizer or a run may leave; uploaded when present. Nothing else in an output folder goes up:
# checkpoint-*/ (optimizer states), runs/ (tensorboard) and training_args.bin (a pickle that can hold a hub token).
OPTIONAL_FILES = (
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    RUN_INFO_FILE,
    METRICS_FILE,
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "predict_results.json",
    "trainer_state.json",
)
# User access tokens look like `hf_` + 34 letters/digits; 30+ keeps clear of ordinary words.
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# What a Hub repo id can look like: `name` or `namespace/name` (huggingface_hub.utils.validate_repo_id's rule).
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Head:
    model_class: str
    auto_class: str
    pipeline_tag: str
    task_name: str


HEADS = {
    "causal-lm": Head("RNNLMForCausalLM", "AutoModelForCausalLM", "text-generation", "Causal language modeling"),
    "token-classification": Head(
        "RNNLMForTokenClassification",
        "AutoModelForTokenClassification",
        "token-classification",
        "Token classification",
    ),
    "sequence-classification": Head(
        "RNNLMForSequenceClassification",
        "AutoModelForSequenceClassification",
        "text-classification",
        "Text classification",
    ),
}
TASK_OF_CLASS = {head.model_class: task for task, head in HEADS.items()}
CELL_NAMES = {"rnn": "Elman RNN", "lstm": "LSTM", "gru": "GRU"}
# Metric-key prefix written by Trainer.evaluate/predict -> dataset split in the model-index.
SPLIT_OF_PREFIX = {"eval": "validation", "test": "test", "predict": "test"}
# Run bookkeeping, not results: kept out of the model-index.
BOOKKEEPING_SUFFIXES = (
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "tokens_per_second",
    "samples",
    "tokens",
    "epoch",
    "model_preparation_time",
)
# Arguments shown in the card's recipe table, when the run has them (all of them are in run_info.json).
RECIPE_ARGUMENTS = (
    "config_name",
    "config_overrides",
    "tokenizer_kind",
    "block_size",
    "bptt",
    "max_seq_length",
    "learning_rate",
    "lr_scheduler_type",
    "optim",
    "weight_decay",
    "max_grad_norm",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
)


class PublishError(RuntimeError):
    """The upload itself failed (network, permissions, server); the local folder is untouched."""


# --------------------------------------------------------------------------------------------- loading


def check_model_source(source: str, option: str | None = "model_name_or_path") -> str:
    """`source` itself when it is an existing path or can be a Hub repo id; else a `FileNotFoundError` at once.

    A missing folder would otherwise reach `from_pretrained` and end in "Repo id must be in the form ..." or, for a
    mistyped relative path such as `runs/lm_wikitxt2` (which has the shape of `org/name`), in half a minute of Hub
    retries. A path counts as local when it starts with `.`, `/` or `~`, has more than one `/`, is no valid repo id,
    or its first part is a folder here (`runs/`).
    """
    if Path(source).expanduser().exists():
        return source
    first = Path(source).parts[0] if Path(source).parts else ""
    local = (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or not REPO_ID_PATTERN.match(source)
        or ("/" in source and Path(first).is_dir())
    )
    if local:
        raise FileNotFoundError(
            f"{f'--{option} ' if option else ''}{source}: no such model folder (relative to {Path.cwd()}); pass a "
            "folder written by a training script or save_pretrained, or a Hub repo id such as org/name"
        )
    return source


def model_task(source: str, **kwargs) -> str | None:
    """The task of a saved model's head ("causal-lm", "token-classification", ...) from its config, or None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(check_model_source(source, None), **kwargs)
    return next((TASK_OF_CLASS[name] for name in config.architectures or [] if name in TASK_OF_CLASS), None)


# --------------------------------------------------------------------------------------------- model card


def evaluation_results(metrics: dict[str, Any]) -> list[tuple[str, str, float]]:
    """`(split, metric, value)` for every evaluation number of a run's metrics (`eval_perplexity` ->
    `("validation", "perplexity", ...)`), without bookkeeping such as runtimes and counts."""
    results: dict[tuple[str, str], float] = {}
    for key, value in metrics.items():
        prefix, _, metric = key.partition("_")
        if prefix not in SPLIT_OF_PREFIX or not metric or metric.endswith(BOOKKEEPING_SUFFIXES):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        # `test_` and `predict_` both name the test split; an explicit `test_` number wins.
        if prefix == "predict":
            results.setdefault((SPLIT_OF_PREFIX[prefix], metric), value)
        else:
            results[(SPLIT_OF_PREFIX[prefix], metric)] = value
    split_order = list(dict.fromkeys(SPLIT_OF_PREFIX.values()))  # validation, then test
    ordered = sorted(results.items(), key=lambda item: (split_order.index(item[0][0]), item[0][1]))
    return [(split, metric, value) for (split, metric), value in ordered]


def count_parameters(model_dir: str | Path) -> int:
    """Parameters stored in the safetensors file(s), read from their headers only (tied weights are stored once)."""
    folder = Path(model_dir)
    if (folder / WEIGHTS_INDEX_FILE).is_file():
        shards = sorted(set(json.loads((folder / WEIGHTS_INDEX_FILE).read_text())["weight_map"].values()))
    else:
        shards = [WEIGHTS_FILE]
    total = 0
    for shard in shards:
        path = folder / shard
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: save the model with model.save_pretrained('{folder}').")
        with open(path, "rb") as file:
            # safetensors layout: u64 little-endian header length, then a JSON header of dtypes/shapes/offsets.
            (header_size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(header_size))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


def write_model_card(
    model_dir: str | Path,
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    language: str | list[str] | None = None,
    datasets: list[str] | None = None,
) -> Path:
    """Render `README.md` in `model_dir` from its `config.json`, `run_info.json` and weights, and return its path.

    Without `run_info.json` (a folder saved by plain `Trainer` or `save_pretrained`) the card comes from the config and
    the Trainer's results files (`all_results.json`, `eval_results.json`, `test_results.json`); the command and
    recipe are then marked as not recorded.

    Args:
        model_dir: a folder written by a training script (or by `save_pretrained` plus `save_run_info`).
        repo_id: the Hub id the usage snippets load from; defaults to `your-username/<folder name>`.
        license: an SPDX-style Hub license id.
        language: language code(s) of the training text, for the card metadata.
        datasets: Hub dataset ids for the metadata; defaults to the run's dataset name.

    Raises:
        FileNotFoundError: `config.json` or the weights are missing.
        ValueError: the run has no evaluation metrics (a card without results), or its `run_info.json` and
            `all_results.json` disagree.
    """
    folder = Path(model_dir)
    config = _read_json(folder / "config.json", "save the model with model.save_pretrained(folder)")
    run = _recorded_run(folder, config)
    metrics = _run_metrics(folder)
    results = evaluation_results(metrics)
    if not results:
        source = RUN_INFO_FILE if (folder / RUN_INFO_FILE).is_file() else f"{folder} ({', '.join(RESULTS_FILES)})"
        raise ValueError(
            f"{source} has no evaluation metrics (eval_*/test_* numbers), so the card would have no results: evaluate "
            "the model (trainer.evaluate()) and save the metrics (trainer.save_metrics('eval', metrics), or "
            "save_run_info) before writing the card."
        )
    head = HEADS[run["task"]]
    repo_id = repo_id or f"your-username/{folder.resolve().name}"
    dataset = str(run.get("dataset") or "unknown")
    dataset_id = datasets[0] if datasets else _slug(dataset)
    model_name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(
            task_type=head.pipeline_tag,
            task_name=head.task_name,
            dataset_type=dataset_id,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric,
            metric_name=metric.replace("_", " "),
            metric_value=value,
        )
        for split, metric, value in results
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=head.pipeline_tag,
        license=license,
        language=language,
        datasets=datasets or [dataset_id],
        metrics=sorted({metric for _, metric, _ in results}),
        tags=["rnn-lm-hf", "rnn", config.get("cell_type", "lstm"), run["task"], "custom_code"],
        model_name=model_name,
        eval_results=eval_results,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        **_card_context(folder, config, run, head, results, repo_id, model_name),
    )
    path = folder / CARD_FILE
    path.write_text(card.content if card.content.endswith("\n") else card.content + "\n", encoding="utf-8")
    return path


def finish_run(output_dir: str | Path, training_args, push_to_hub: bool) -> None:
    """End of every training script: write the model card and, with `--push_to_hub`, publish the folder.

    Scripts turn Trainer's own `push_to_hub` off (it would push every checkpoint and overwrite the card) and call
    this once instead. A run without evaluation metrics gets no card, with a warning: it has nothing to report.
    """
    try:
        write_model_card(output_dir, repo_id=training_args.hub_model_id)
    except ValueError as error:
        if push_to_hub:
            raise
        logger.warning(f"No model card written: {error}")
        return
    if push_to_hub:
        repo_id = training_args.hub_model_id or Path(output_dir).resolve().name
        url = publish(
            output_dir, repo_id, private=bool(training_args.hub_private_repo),
            revision=getattr(training_args, "hub_revision", None), token=training_args.hub_token,
        )  # fmt: skip
        print(f"[hub] published {repo_id}: {url}")


def _recorded_run(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """`run_info.json`, or what a folder without one tells: the task from the config's head class."""
    if (folder / RUN_INFO_FILE).is_file():
        return load_run_info(folder)
    task = next((TASK_OF_CLASS[name] for name in config.get("architectures") or [] if name in TASK_OF_CLASS), None)
    if task is None:
        raise ValueError(
            f"{folder / 'config.json'} names no rnn-lm-hf head in `architectures` ({config.get('architectures')}) "
            f"and there is no {RUN_INFO_FILE}: save the model with model.save_pretrained(folder)."
        )
    return {"task": task, "command": None, "dataset": None, "evaluation_protocol": None, "arguments": {}}


def _run_metrics(folder: Path) -> dict[str, Any]:
    """The run's metrics (`run_info.json`), cross-checked with the Trainer's metrics file when there is one; without
    `run_info.json`, the Trainer's results files (`Trainer.save_metrics`)."""
    if not (folder / RUN_INFO_FILE).is_file():
        metrics: dict[str, Any] = {}
        for name in RESULTS_FILES:  # the split files first: all_results.json holds the latest of everything
            if (folder / name).is_file():
                metrics.update(json.loads((folder / name).read_text()))
        return metrics
    metrics = dict(load_run_info(folder).get("metrics") or {})
    metrics_file = folder / METRICS_FILE
    if metrics_file.is_file():
        saved = json.loads(metrics_file.read_text())
        differing = sorted(k for k in metrics.keys() & saved.keys() if metrics[k] != saved[k])
        if differing:
            raise ValueError(
                f"{RUN_INFO_FILE} and {METRICS_FILE} in {folder} disagree on {', '.join(differing)}: they come from "
                "different runs. Re-run the training script into a fresh output folder."
            )
        metrics = {**saved, **metrics}
    return metrics


def _card_context(
    folder: Path,
    config: dict[str, Any],
    run: dict[str, Any],
    head: Head,
    results: list[tuple[str, str, float]],
    repo_id: str,
    model_name: str,
) -> dict[str, Any]:
    """Everything the template shows besides the YAML metadata."""
    cell = config.get("cell_type", "lstm")
    arguments = run.get("arguments") or {}
    tied = bool(config.get("tie_word_embeddings"))
    dropout = float(config.get("dropout") or 0.0)
    bidirectional = bool(config.get("bidirectional"))
    parameters = count_parameters(folder)
    citation_keys = [
        *(["bengio2003", "mikolov2010"] if run["task"] == "causal-lm" else []),
        {"rnn": "elman1990", "lstm": "hochreiter1997", "gru": "cho2014"}[cell],
        *(["schuster1997"] if bidirectional else []),
        *(["zaremba2014"] if dropout > 0 else []),
        *(["press2017", "inan2017"] if tied and head.model_class == "RNNLMForCausalLM" else []),
    ]
    labels = config.get("id2label") or {}
    return {
        "model_name": model_name,
        "repo_id": repo_id,
        "task": run["task"],
        "head": head,
        "cell_name": CELL_NAMES[cell] + (f" ({config.get('rnn_nonlinearity', 'tanh')})" if cell == "rnn" else ""),
        "config": config,
        "embedding_size": config.get("embedding_size") or config.get("hidden_size"),
        "bidirectional": bidirectional,
        "tied": tied,
        "dropout": dropout,
        "parameters": parameters,
        "parameters_human": _human(parameters),
        "labels": [labels[k] for k in sorted(labels, key=int)] if head.model_class != "RNNLMForCausalLM" else [],
        "dataset": run.get("dataset") or "unknown",
        "evaluation_protocol": run.get("evaluation_protocol") or "not recorded",
        "command": redact(run.get("command") or "not recorded"),
        "has_metrics_file": (folder / METRICS_FILE).is_file(),
        "recipe": [(k, arguments[k]) for k in RECIPE_ARGUMENTS if arguments.get(k) not in (None, "", -1)],
        "wall_time": _duration(run.get("wall_time_s")),
        "results": [(split, metric, _number(value)) for split, metric, value in results],
        "citations": [CITATIONS[key] for key in citation_keys],
        "versions": _versions(),
    }


def redact(text: str) -> str:
    """Blank out anything that looks like a Hub token (and the current token's value) before it reaches a card."""
    for secret in _secret_values():
        text = text.replace(secret, "<redacted>")
    # The values of credential options (--hub_token X, --password=X); other options (--tokenizer_kind) stay.
    text = re.sub(r"(--([\w-]+)[= ])(\S+)", lambda m: m[1] + "<redacted>" if is_secret(m[2]) else m[0], text)
    return TOKEN_PATTERN.sub("<redacted>", text)


def _secret_values(token: str | None = None) -> list[str]:
    values = [token, *(os.environ.get(name) for name in TOKEN_ENV_VARS)]
    return [value for value in values if value and len(value) >= 8]


def _slug(name: str) -> str:
    base = Path(name.rstrip("/")).name or name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-").lower() or "unknown"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _human(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}K" if count >= 1e3 else str(count)


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    from . import __version__

    return {
        "rnn-lm-hf": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
    }


# BibTeX of the papers each architecture piece comes from.
CITATIONS = {
    "bengio2003": """@article{bengio2003neural,
  title   = {A Neural Probabilistic Language Model},
  author  = {Bengio, Yoshua and Ducharme, R{\\'e}jean and Vincent, Pascal and Jauvin, Christian},
  journal = {Journal of Machine Learning Research},
  volume  = {3},
  pages   = {1137--1155},
  year    = {2003}
}""",
    "mikolov2010": """@inproceedings{mikolov2010recurrent,
  title     = {Recurrent Neural Network Based Language Model},
  author    = {Mikolov, Tom{\\'a}{\\v{s}} and Karafi{\\'a}t, Martin and Burget, Luk{\\'a}{\\v{s}} and {\\v{C}}ernock{\\'y}, Jan and Khudanpur, Sanjeev},
  booktitle = {Interspeech},
  pages     = {1045--1048},
  year      = {2010}
}""",
    "elman1990": """@article{elman1990finding,
  title   = {Finding Structure in Time},
  author  = {Elman, Jeffrey L.},
  journal = {Cognitive Science},
  volume  = {14},
  number  = {2},
  pages   = {179--211},
  year    = {1990}
}""",
    "hochreiter1997": """@article{hochreiter1997long,
  title   = {Long Short-Term Memory},
  author  = {Hochreiter, Sepp and Schmidhuber, J{\\"u}rgen},
  journal = {Neural Computation},
  volume  = {9},
  number  = {8},
  pages   = {1735--1780},
  year    = {1997}
}""",
    "cho2014": """@inproceedings{cho2014learning,
  title     = {Learning Phrase Representations using {RNN} Encoder--Decoder for Statistical Machine Translation},
  author    = {Cho, Kyunghyun and van Merri{\\"e}nboer, Bart and Gulcehre, Caglar and Bahdanau, Dzmitry and Bougares, Fethi and Schwenk, Holger and Bengio, Yoshua},
  booktitle = {Proceedings of EMNLP},
  pages     = {1724--1734},
  year      = {2014}
}""",
    "schuster1997": """@article{schuster1997bidirectional,
  title   = {Bidirectional Recurrent Neural Networks},
  author  = {Schuster, Mike and Paliwal, Kuldip K.},
  journal = {IEEE Transactions on Signal Processing},
  volume  = {45},
  number  = {11},
  pages   = {2673--2681},
  year    = {1997}
}""",
    "zaremba2014": """@article{zaremba2014recurrent,
  title   = {Recurrent Neural Network Regularization},
  author  = {Zaremba, Wojciech and Sutskever, Ilya and Vinyals, Oriol},
  journal = {arXiv preprint arXiv:1409.2329},
  year    = {2014}
}""",
    "press2017": """@inproceedings{press2017using,
  title     = {Using the Output Embedding to Improve Language Models},
  author    = {Press, Ofir and Wolf, Lior},
  booktitle = {Proceedings of EACL},
  pages     = {157--163},
  year      = {2017}
}""",
    "inan2017": """@inproceedings{inan2017tying,
  title     = {Tying Word Vectors and Word Classifiers: A Loss Framework for Language Modeling},
  author    = {Inan, Hakan and Khosravi, Khashayar and Socher, Richard},
  booktitle = {International Conference on Learning Representations},
  year      = {2017}
}""",
}


# --------------------------------------------------------------------------------------------- folder checks


def validate_folder(model_dir: str | Path, *, token: str | None = None) -> list[str]:
    """Check that `model_dir` loads as Hub code and is safe to publish; return the files `publish` uploads.

    Checks: `config.json` with the complete `auto_map`, every entry naming a class defined in a shipped `.py` file
    (read with `ast`, never imported) whose relative imports resolve; weights in safetensors; the tokenizer, within
    the model's vocabulary; `generation_config.json` for a causal LM; a `README.md` card with results; and no Hub token
    (`hf_...`, or the value of `token`/`HF_TOKEN`) in any file to upload.

    Raises:
        FileNotFoundError: `model_dir` is not a folder.
        ValueError: one line per problem, each naming the fix.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass the output folder of a training run.")
    problems: list[str] = []
    files: list[str] = []
    config = _check_config(folder, problems)
    if config is not None:
        files.append("config.json")
        files += _check_code(folder, config, problems)
    files += _check_weights(folder, problems)
    files += _check_tokenizer(folder, config, problems)
    is_causal_lm = config is not None and "RNNLMForCausalLM" in (config.get("architectures") or [])
    if (folder / "generation_config.json").is_file():
        files.append("generation_config.json")
    elif is_causal_lm:
        problems.append(
            "generation_config.json is missing: a causal LM needs it for generate() and pipelines; re-save the model "
            "with model.save_pretrained(folder)."
        )
    files += _check_card(folder, problems)
    files += [name for name in OPTIONAL_FILES if (folder / name).is_file()]
    files = sorted(set(files))
    problems += _find_secrets(folder, files, token)
    if problems:
        listed = problems[0] if len(problems) == 1 else "".join(f"\n  - {problem}" for problem in problems)
        raise ValueError(f"{folder} cannot be published: {listed}")
    return files


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {fix}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): {fix}.") from error


def _check_config(folder: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        config = _read_json(folder / "config.json", "save the model with model.save_pretrained(folder)")
    except (FileNotFoundError, ValueError) as error:
        problems.append(str(error))
        return None
    if config.get("model_type") != "rnn_lm":
        problems.append(
            f"config.json has model_type {config.get('model_type')!r}, not 'rnn_lm': not an rnn-lm-hf model."
        )
    missing = [name for name in auto_map() if name not in (config.get("auto_map") or {})]
    if missing:
        problems.append(
            f"config.json auto_map lacks {', '.join(missing)}: re-save the model with model.save_pretrained(folder) "
            "(rnn-lm-hf models write the complete auto_map)."
        )
    return config


def _check_code(folder: Path, config: dict[str, Any], problems: list[str]) -> list[str]:
    """Every auto_map class exists in a shipped module, and those modules' relative imports resolve."""
    shipped: dict[str, set[str] | None] = {}  # module -> names defined at top level (None: file missing)
    reported_missing: set[str] = set()  # one message per missing file, however many entries point to it

    def names_in(module: str) -> set[str] | None:
        if module not in shipped:
            path = folder / f"{module}.py"
            shipped[module] = _top_level_names(path) if path.is_file() else None
        return shipped[module]

    for auto_name, reference in (config.get("auto_map") or {}).items():
        for ref in reference if isinstance(reference, list) else [reference]:
            if not ref:
                continue
            module, _, class_name = ref.split("--")[-1].rpartition(".")
            names = names_in(module)
            if names is None and module in reported_missing:
                continue
            if names is None:
                reported_missing.add(module)
                problems.append(
                    f"{module}.py is missing (auto_map {auto_name} points to it): re-save the model with "
                    "model.save_pretrained(folder), which copies the code files."
                )
            elif class_name not in names:
                problems.append(
                    f"auto_map {auto_name} points to {ref}, but {module}.py defines no class {class_name}: fix "
                    "config.json's auto_map or re-save the model with model.save_pretrained(folder)."
                )
    # Relative imports between shipped modules (modeling -> configuration), transitively.
    pending = [module for module, names in shipped.items() if names is not None]
    checked: set[str] = set()
    while pending:
        module = pending.pop()
        if module in checked:
            continue
        checked.add(module)
        for imported, names, absolute in _imports(folder / f"{module}.py"):
            if absolute:
                problems.append(
                    f"{module}.py imports {imported} absolutely: Hub code must import only torch, transformers and "
                    "its sibling files (from .x import Y)."
                )
                continue
            defined = names_in(imported)
            if defined is None:
                if imported not in reported_missing:
                    problems.append(
                        f"{module}.py imports .{imported}, but {imported}.py is not in the folder: copy it."
                    )
                    reported_missing.add(imported)
                continue
            for name in sorted(set(names) - defined - {"*"}):
                problems.append(f"{module}.py imports {name} from .{imported}, which does not define it.")
            pending.append(imported)
    return sorted(f"{module}.py" for module, names in shipped.items() if names is not None)


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _imports(path: Path) -> Iterable[tuple[str, list[str], bool]]:
    """`(module, names, is_package_import)` for imports of sibling files or of the rnn_lm_hf package."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            yield node.module, [alias.name for alias in node.names], False
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rnn_lm_hf"):
            yield node.module, [], True
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rnn_lm_hf"):
                    yield alias.name, [], True


def _check_weights(folder: Path, problems: list[str]) -> list[str]:
    index = folder / WEIGHTS_INDEX_FILE
    try:
        count_parameters(folder)
    except FileNotFoundError:
        problems.append(
            f"{WEIGHTS_FILE} is missing: save the model with model.save_pretrained(folder) (safetensors is the default)."
        )
        return []
    except (ValueError, KeyError, struct.error) as error:
        problems.append(f"the safetensors weights in {folder} are unreadable ({error}): save the model again.")
        return []
    if index.is_file():
        return [WEIGHTS_INDEX_FILE, *sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [WEIGHTS_FILE]


def _check_tokenizer(folder: Path, config: dict[str, Any] | None, problems: list[str]) -> list[str]:
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        problems.append(
            f"{', '.join(missing)} missing: the folder has no (complete) tokenizer, so users could not encode text. "
            "Save it with tokenizer.save_pretrained(folder)."
        )
        return [name for name in TOKENIZER_FILES if name not in missing]
    vocab_size = (config or {}).get("vocab_size")
    try:
        backend = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        problems.append(f"tokenizer.json is not valid JSON ({error}): save the tokenizer again.")
        return list(TOKENIZER_FILES)
    vocab = (backend.get("model") or {}).get("vocab")
    ids = [*(vocab.values() if isinstance(vocab, dict) else []), *(t["id"] for t in backend.get("added_tokens") or [])]
    if isinstance(vocab_size, int) and ids and max(ids) >= vocab_size:
        problems.append(
            f"the tokenizer has token id {max(ids)} but the model's vocab_size is {vocab_size}: this tokenizer belongs "
            "to another model; save the tokenizer the model was trained with, or resize the embeddings."
        )
    return list(TOKENIZER_FILES)


def _check_card(folder: Path, problems: list[str]) -> list[str]:
    path = folder / CARD_FILE
    fix = "write it with `python -m rnn_lm_hf.hub card FOLDER` from a run_info.json with evaluation metrics"
    if not path.is_file():
        problems.append(f"{CARD_FILE} (the model card) is missing: {fix}.")
        return []
    try:
        card = ModelCard(path.read_text(encoding="utf-8"))
    except ValueError as error:
        problems.append(f"{CARD_FILE} metadata is invalid ({' '.join(str(error).split())}): {fix}.")
        return [CARD_FILE]
    if not card.data.eval_results:
        problems.append(
            f"{CARD_FILE} has no results (no model-index): a card without results is not published; {fix}."
        )
    elif (folder / RUN_INFO_FILE).is_file():
        # A card left from an earlier evaluation would publish numbers this folder's run does not have.
        try:
            expected = {(split, metric): value for split, metric, value in evaluation_results(_run_metrics(folder))}
        except ValueError as error:
            problems.append(str(error))
        else:
            shown = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
            if shown != expected:
                problems.append(
                    f"{CARD_FILE} results differ from the run's metrics ({RUN_INFO_FILE}, {METRICS_FILE}): regenerate "
                    "the card with `python -m rnn_lm_hf.hub card FOLDER`."
                )
    if card.data.library_name != "transformers":
        problems.append(f"{CARD_FILE} metadata lacks library_name: transformers: {fix}.")
    return [CARD_FILE]


def _find_secrets(folder: Path, files: list[str], token: str | None) -> list[str]:
    secrets = _secret_values(token)
    found = []
    for name in files:
        if name.endswith(".safetensors"):
            continue  # binary tensors: no text to leak into
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        if TOKEN_PATTERN.search(text) or any(secret in text for secret in secrets):
            found.append(name)
    if found:
        return [
            f"{', '.join(found)} contain(s) a Hub access token: remove it (and revoke the token) before publishing; "
            "pass tokens through HF_TOKEN or `hf auth login`, never on a command line or in arguments."
        ]
    return []


# --------------------------------------------------------------------------------------------- publishing


def publish(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Validate `model_dir`, then upload it to the Hub repo `repo_id` in one commit; return the commit URL.

    Args:
        model_dir: a folder that passes `validate_folder` (only the files it lists are uploaded).
        repo_id: `namespace/name`; created when missing.
        private: create the repo private. An existing public repo is never published to with `private=True`.
        revision: a branch to commit to (created from `main` when missing); `None` means `main`.
        commit_message: defaults to a summary of the model.
        token: a Hub token; defaults to `HF_TOKEN` or the saved login. Never written anywhere.
        endpoint: the Hub URL; defaults to `HF_ENDPOINT`, then huggingface.co.

    Raises:
        FileNotFoundError, ValueError: the folder is not publishable (nothing was sent).
        PublishError: the Hub refused or the connection failed; the local folder is unchanged.
    """
    folder = Path(model_dir)
    files = validate_folder(folder, token=token)
    validate_repo_id(repo_id)  # a ValueError naming the rule, before any request
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ValueError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to publish.")
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    config = json.loads((folder / "config.json").read_text())
    message = commit_message or (
        f"Upload {(config.get('architectures') or ['RNN-LM'])[0]} "
        f"({config.get('cell_type')}, {config.get('num_hidden_layers')} layers) with rnn-lm-hf"
    )
    with _upload_errors(folder, f"{api.endpoint}/{repo_id}"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        exposed = private and not api.model_info(repo_id).private
    if exposed:
        raise ValueError(
            f"{repo_id} already exists and is public, so private=True would publish in the open: make it private on "
            "the Hub first, or publish without --private."
        )
    with _upload_errors(folder, f"{api.endpoint}/{repo_id}"):
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            allow_patterns=files,  # exactly the validated files: never checkpoints or pickles
            revision=revision,
            commit_message=message,
        )
    return commit.commit_url


@contextmanager
def _upload_errors(folder: Path, target: str) -> Iterator[None]:
    """Turn whatever the client raises (HTTP, connection, malformed answer) into one clear `PublishError`."""
    try:
        yield
    except Exception as error:
        raise PublishError(
            f"Uploading {folder} to {target} failed: {_reason(error)}. Nothing in {folder} was changed; fix the cause "
            "(token permissions, repo name, connection) and run the same command again."
        ) from error


def _reason(error: BaseException) -> str:
    """The most specific one-line reason: the server's own message when there is one, down the cause chain."""
    messages = []
    while error is not None:
        server_message = getattr(error, "server_message", None)
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        messages.append(" ".join((server_message or first_line).split()).rstrip("."))
        error = error.__cause__
    return redact(": ".join(dict.fromkeys(messages)))


# --------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`card`, `check` and `push` subcommands; errors are one line on stderr (exit 2: bad folder, 1: upload failed)."""
    parser = argparse.ArgumentParser(prog="python -m rnn_lm_hf.hub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="(re)write README.md of a trained model folder")
    card.add_argument("model_dir")
    card.add_argument("--repo-id", help="Hub id used in the card's loading snippets")
    card.add_argument("--license", default="apache-2.0")
    card.add_argument("--language", action="append", help="language code of the training text (repeatable)")
    check = commands.add_parser("check", help="validate a folder for publishing and list the files to upload")
    check.add_argument("model_dir")
    push = commands.add_parser("push", help="validate, then upload a folder (token: HF_TOKEN or `hf auth login`)")
    push.add_argument("model_dir")
    push.add_argument("repo_id", help="namespace/name")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to commit to (created from main when missing)")
    push.add_argument("--commit-message")
    args = parser.parse_args(argv)
    try:
        if args.command == "card":
            path = write_model_card(args.model_dir, repo_id=args.repo_id, license=args.license, language=args.language)
            print(f"Wrote {path}")
        elif args.command == "check":
            print("\n".join(validate_folder(args.model_dir)))
        else:
            folder = Path(args.model_dir)
            if folder.is_dir() and not (folder / CARD_FILE).is_file():  # e.g. a folder saved by plain Trainer
                print(f"Wrote {write_model_card(args.model_dir, repo_id=args.repo_id)}")
            url = publish(
                args.model_dir,
                args.repo_id,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
            )
            print(f"Published {args.repo_id}: {url}")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
