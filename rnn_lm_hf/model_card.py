"""Model cards for saved rnn-lm-hf folders: `write_model_card` renders `README.md` from `config.json`, `run_info.json`
(or the Trainer's results files) and the weights, with the Hub's model-index metadata and the citations of every piece
of the architecture. Package code, never shipped as remote code; publishing is `hub.py`.
"""

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_rnn_lm import RNNLMConfig
from .run_info import RUN_INFO_FILE, TASKS, Task, load_run_info, redact, task_of


TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md.j2"
CARD_FILE = "README.md"
METRICS_FILE = "all_results.json"  # what Trainer.save_metrics("all", ...) writes
# Trainer.save_metrics(split) files, read (in this order) when a folder has no run_info.json.
RESULTS_FILES = ("eval_results.json", "test_results.json", METRICS_FILE)
WEIGHTS_FILE, WEIGHTS_INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
# A run that does not record its dataset: its model-index entry, and the words the card's prose uses.
UNKNOWN_DATASET, UNRECORDED_DATASET_TEXT = "unknown", "an unrecorded dataset"
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
    dataset: str | None = None,
) -> Path:
    """Render `README.md` in `model_dir` from its `config.json`, `run_info.json` and weights, and return its path.

    Without `run_info.json` (a folder saved by plain `Trainer` or `save_pretrained`) the card comes from the config and
    the Trainer's results files (`all_results.json`, `eval_results.json`, `test_results.json`); it then says that the
    command, arguments and evaluation protocol (and, unless `dataset` names it, the training data) were not recorded,
    and names only the files the folder has.

    Args:
        model_dir: a folder written by a training script (or by `save_pretrained` plus `save_run_info`).
        repo_id: the Hub id the usage snippets load from; defaults to `your-username/<folder name>`.
        license: an SPDX-style Hub license id.
        language: language code(s) of the training text, for the card metadata.
        datasets: Hub dataset ids for the metadata; defaults to `dataset`, else the run's dataset name.
        dataset: the training dataset (a Hub id such as `Salesforce/wikitext`, or a name), shown in the card and
            recorded in its metadata as given; it replaces the name in `run_info.json`. Without it and without a
            recorded name, the card says the training data is not recorded and its metadata lists no dataset.

    Raises:
        FileNotFoundError: `config.json` or the weights are missing.
        ValueError: the run has no evaluation metrics (a card without results), or its `run_info.json` and
            `all_results.json` disagree.
    """
    folder = Path(model_dir)
    config = RNNLMConfig.from_dict(
        read_json(folder / "config.json", "save the model with model.save_pretrained(folder)")
    )
    run = _recorded_run(folder, config)
    metrics = run_metrics(folder)
    results = evaluation_results(metrics)
    if not results:
        source = RUN_INFO_FILE if (folder / RUN_INFO_FILE).is_file() else f"{folder} ({', '.join(RESULTS_FILES)})"
        raise ValueError(
            f"{source} has no evaluation metrics (eval_*/test_* numbers), so the card would have no results: evaluate "
            "the model (trainer.evaluate()) and save the metrics (trainer.save_metrics('eval', metrics), or "
            "save_run_info) before writing the card."
        )
    head = TASKS[run["task"]]
    repo_id = repo_id or f"your-username/{folder.resolve().name}"
    if dataset:  # named by the caller: as given, in the prose and the metadata
        run = {**run, "dataset": dataset}
        datasets = datasets or [dataset]
    elif run.get("dataset"):
        datasets = datasets or [_slug(str(run["dataset"]))]
    # Not recorded: the `datasets` metadata (links to Hub datasets) lists none; the model-index needs an entry.
    dataset_name = str(run.get("dataset") or UNKNOWN_DATASET)
    dataset_id = datasets[0] if datasets else UNKNOWN_DATASET
    model_name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(
            task_type=head.pipeline_tag,
            task_name=head.title,
            dataset_type=dataset_id,
            dataset_name=dataset_name,
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
        datasets=datasets or None,
        metrics=sorted({metric for _, metric, _ in results}),
        tags=["rnn-lm-hf", "rnn", config.cell_type, run["task"], "custom_code"],
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


def _recorded_run(folder: Path, config: RNNLMConfig) -> dict[str, Any]:
    """`run_info.json`, or what a folder without one tells: the task from the config's head class."""
    if (folder / RUN_INFO_FILE).is_file():
        return load_run_info(folder)
    task = task_of(config.architectures)
    if task is None:
        raise ValueError(
            f"{folder / 'config.json'} names no rnn-lm-hf head in `architectures` ({config.architectures}) "
            f"and there is no {RUN_INFO_FILE}: save the model with model.save_pretrained(folder)."
        )
    return {"task": task, "command": None, "dataset": None, "evaluation_protocol": None, "arguments": {}}


def run_metrics(folder: Path) -> dict[str, Any]:
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
    config: RNNLMConfig,
    run: dict[str, Any],
    head: Task,
    results: list[tuple[str, str, float]],
    repo_id: str,
    model_name: str,
) -> dict[str, Any]:
    """Everything the template shows besides the YAML metadata."""
    cell = config.cell_type
    arguments = run.get("arguments") or {}
    tied, dropout, bidirectional = config.tie_word_embeddings, config.dropout, config.bidirectional
    parameters = count_parameters(folder)
    citation_keys = [
        *(["schuster1997"] if bidirectional else []),
        *(["zaremba2014"] if dropout > 0 else []),
        *(["press2017", "inan2017"] if tied and run["task"] == "causal-lm" else []),
        *(["peters2018"] if config.separate_directions or config.layer_mix else []),
        *(["kim2016"] if config.char_cnn_filters else []),
        *(["akbik2018"] if config.word_separator_id is not None else []),
        *(["lample2016"] if config.use_crf and run["task"] == "token-classification" else []),
        *(["merity2018"] if uses_awd_lstm(config, arguments) else []),
        *(["howard2018"] if uses_ulmfit(config, arguments, run["task"]) else []),
        *(["grave2017"] if config.softmax_cutoffs and run["task"] == "causal-lm" else []),
    ]
    labels = config.id2label or {}
    return {
        "model_name": model_name,
        "repo_id": repo_id,
        "task": run["task"],
        "head": head,
        "cell_name": config.cell.name + (f" ({config.rnn_nonlinearity})" if cell == "rnn" else ""),
        "config": config,
        "embedding_size": config.input_size,
        "bidirectional": bidirectional,
        "tied": tied,
        "dropout": dropout,
        "parameters": parameters,
        "parameters_human": _human(parameters),
        "labels": [labels[k] for k in sorted(labels, key=int)] if run["task"] != "causal-lm" else [],
        "dataset": run.get("dataset") or UNRECORDED_DATASET_TEXT,
        "dataset_recorded": bool(run.get("dataset")),
        "recorded": (folder / RUN_INFO_FILE).is_file(),
        "results_files": ", ".join(f"`{name}`" for name in RESULTS_FILES if (folder / name).is_file()),
        "evaluation_protocol": run.get("evaluation_protocol") or "not recorded",
        "command": redact(run.get("command") or "not recorded"),
        "has_metrics_file": (folder / METRICS_FILE).is_file(),
        "recipe": [(k, arguments[k]) for k in RECIPE_ARGUMENTS if arguments.get(k) not in (None, "", -1)],
        "wall_time": _duration(run.get("wall_time_s")),
        "results": [(split, metric, _number(value)) for split, metric, value in results],
        "citations": [
            *(CITATIONS[key] for key in (["bengio2003", "mikolov2010"] if run["task"] == "causal-lm" else [])),
            config.cell.citation,  # the cell's own BibTeX, from the table of cell types
            *(CITATIONS[key] for key in citation_keys),
        ],
        "versions": _versions(),
    }


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
    "peters2018": """@inproceedings{peters2018deep,
  title     = {Deep Contextualized Word Representations},
  author    = {Peters, Matthew E. and Neumann, Mark and Iyyer, Mohit and Gardner, Matt and Clark, Christopher and Lee, Kenton and Zettlemoyer, Luke},
  booktitle = {Proceedings of NAACL-HLT},
  pages     = {2227--2237},
  year      = {2018}
}""",
    "kim2016": """@inproceedings{kim2016character,
  title     = {Character-Aware Neural Language Models},
  author    = {Kim, Yoon and Jernite, Yacine and Sontag, David and Rush, Alexander M.},
  booktitle = {Proceedings of AAAI},
  pages     = {2741--2749},
  year      = {2016}
}""",
    "akbik2018": """@inproceedings{akbik2018contextual,
  title     = {Contextual String Embeddings for Sequence Labeling},
  author    = {Akbik, Alan and Blythe, Duncan and Vollgraf, Roland},
  booktitle = {Proceedings of COLING},
  pages     = {1638--1649},
  year      = {2018}
}""",
    "lample2016": """@inproceedings{lample2016neural,
  title     = {Neural Architectures for Named Entity Recognition},
  author    = {Lample, Guillaume and Ballesteros, Miguel and Subramanian, Sandeep and Kawakami, Kazuya and Dyer, Chris},
  booktitle = {Proceedings of NAACL-HLT},
  pages     = {260--270},
  year      = {2016}
}""",
    "inan2017": """@inproceedings{inan2017tying,
  title     = {Tying Word Vectors and Word Classifiers: A Loss Framework for Language Modeling},
  author    = {Inan, Hakan and Khosravi, Khashayar and Socher, Richard},
  booktitle = {International Conference on Learning Representations},
  year      = {2017}
}""",
    "merity2018": """@inproceedings{merity2018regularizing,
  title     = {Regularizing and Optimizing {LSTM} Language Models},
  author    = {Merity, Stephen and Keskar, Nitish Shirish and Socher, Richard},
  booktitle = {International Conference on Learning Representations},
  year      = {2018}
}""",
    "grave2017": """@inproceedings{grave2017efficient,
  title     = {Efficient softmax approximation for {GPU}s},
  author    = {Grave, Edouard and Joulin, Armand and Ciss{\\'e}, Moustapha and Grangier, David and J{\\'e}gou, Herv{\\'e}},
  booktitle = {Proceedings of ICML},
  pages     = {1302--1310},
  year      = {2017}
}""",
    "howard2018": """@inproceedings{howard2018universal,
  title     = {Universal Language Model Fine-tuning for Text Classification},
  author    = {Howard, Jeremy and Ruder, Sebastian},
  booktitle = {Proceedings of ACL},
  pages     = {328--339},
  year      = {2018}
}""",
}


# AWD-LSTM's tricks (Merity et al. 2018): weight drop, embedding and locked dropout (config fields), AR/TAR, NT-ASGD
# and variable-length BPTT (training options); ULMFiT's (Howard & Ruder 2018): concat pooling (config), discriminative
# learning rates, gradual unfreezing and target-task LM fine-tuning (training options).
AWD_LSTM_FIELDS = ("weight_drop", "dropout_embedding", "dropout_input", "dropout_hidden", "dropout_output")
AWD_LSTM_OPTIONS = ("activation_regularization", "temporal_activation_regularization", "nt_asgd", "variable_bptt")
ULMFIT_OPTIONS = ("layerwise_lr_decay", "gradual_unfreezing", "lm_adaptation_epochs")


def uses_awd_lstm(config: RNNLMConfig, arguments: dict[str, Any]) -> bool:
    return any(getattr(config, name, 0) for name in AWD_LSTM_FIELDS) or any(
        arguments.get(name) for name in AWD_LSTM_OPTIONS
    )


def uses_ulmfit(config: RNNLMConfig, arguments: dict[str, Any], task: str) -> bool:
    concat_pooling = task == "sequence-classification" and config.classifier_pooling == "concat"
    return concat_pooling or any(arguments.get(name) for name in ULMFIT_OPTIONS)


def read_json(path: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {fix}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): {fix}.") from error
