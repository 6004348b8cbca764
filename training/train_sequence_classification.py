"""Fine-tune an RNN-LM sentence classifier (sentiment) in the shape of transformers' `run_glue.py`.

From scratch on tsv/csv/jsonl files with text and label columns (a word-level tokenizer trained on the train split):

    python training/train_sequence_classification.py training/configs/sentiment_bilstm_tiny.json

10-fold cross-validation on the one-file-per-class layout (rt-polarity: `rt-polarity.pos` / `.neg`, Latin-1), from
a causal-LM checkpoint with ULMFiT's discriminative learning rates:

    python training/train_sequence_classification.py --model_name_or_path runs/lm_wikitext2 \\
        --train_file ../shared/data/rt-polarity --encoding latin-1 --cv_folds 10 \\
        --layerwise_lr_decay 2.6 --do_train --output_dir runs/rt_polarity

Inputs: a file (`.tsv`, `.csv`, `.jsonl`, or `stsa.binary.*` `<label> <sentence>` lines) or a folder of class files.
Label names come from the train split and are stored in the config. Metrics: accuracy and macro-F1 through the
package's `classification` metric. Data errors exit with status 2 and one line naming the file and line. Unless
given, the learning rate is 5e-3 and a loss is logged every 10 steps (Trainer's 5e-5 and 500 are for fine-tuning
pretrained transformers: a BiLSTM from scratch barely moves at 5e-5).
"""

import copy
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

from rnn_lm_hf import RNNLMForSequenceClassification
from rnn_lm_hf.classification_data import kfold_splits, load_classification_dataset
from rnn_lm_hf.hub import finish_run
from rnn_lm_hf.metrics import metric_path
from rnn_lm_hf.run_info import command_line, public_arguments, save_run_info
from rnn_lm_hf.training.finetuning import (
    SplitArguments,
    TransferArguments,
    TransferTrainer,
    adapt_language_model,
    checkpoint_labels,
    start_finetuning,
    train_evaluate_predict,
)
from rnn_lm_hf.training.scaffold import ModelArguments, RunArguments, build_model, get_tokenizer, run_main


logger = logging.getLogger(__name__)

REPORTED_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall")


@dataclass
class DataArguments(SplitArguments):
    """Which files to read and how to split them (files: a .tsv/.csv/.jsonl/stsa.binary.* file or a class folder)."""

    text_column: str | None = field(default=None, metadata={"help": "Text column (default: 'sentence' or 'text')."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: 'label')."})
    file_format: str | None = field(
        default=None, metadata={"help": "tsv, csv, jsonl or label_first (default: from the file name)."}
    )
    classes: list[str] | None = field(
        default=None, metadata={"help": "Class-file folder: the file suffixes that are classes (e.g. pos neg)."}
    )
    # Not `label_names`: TrainingArguments owns that option (the batch keys holding labels).
    label_values: list[str] | None = field(
        default=None, metadata={"help": "Labels as written in the files, in id order (default: sorted train labels)."}
    )
    cv_folds: int | None = field(
        default=None,
        metadata={"help": "No test split: k-fold cross-validation on --train_file (stratified; rt-polarity: 10)."},
    )
    cv_fold_indices: list[int] | None = field(
        default=None,
        metadata={
            "help": "Run only these folds of --cv_folds (0-based), to spread the folds over processes "
            "(bench/downstream.py --cv_shards); the mean and std are then over these folds."
        },
    )
    validation_split_percentage: int | None = field(
        default=None,
        metadata={"help": "Without --validation_file: hold out this percentage of the training data (stratified)."},
    )

    def __post_init__(self):
        if self.train_file is None and self.test_file is None and self.validation_file is None:
            raise ValueError("pass --train_file (and --validation_file / --test_file), files or class-file folders")
        for option in ("train_file", "validation_file", "test_file"):
            path = getattr(self, option)
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(f"--{option} {path}: no such file or folder (relative to {Path.cwd()})")
        if self.cv_folds is not None:
            if self.test_file is not None or self.train_file is None:
                raise ValueError("--cv_folds splits --train_file into folds: leave out --test_file")
            if self.cv_folds < 2:
                raise ValueError(f"--cv_folds must be >= 2, got {self.cv_folds}")
        if self.cv_fold_indices is not None:
            folds = range(self.cv_folds or 0)
            if not self.cv_fold_indices or any(fold not in folds for fold in self.cv_fold_indices):
                raise ValueError(
                    f"--cv_fold_indices {self.cv_fold_indices}: pass fold numbers in 0..k-1 with --cv_folds k"
                )
        if self.validation_split_percentage is not None:
            if self.validation_file is not None:
                raise ValueError("pass either --validation_file or --validation_split_percentage, not both")
            if not 0 < self.validation_split_percentage < 100:
                raise ValueError(
                    f"--validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}"
                )


def read_splits(data_args: DataArguments, label_names: list[str] | None) -> datasets.DatasetDict:
    reader_kwargs = {"text_column": data_args.text_column, "label_column": data_args.label_column}
    reader_kwargs.update(file_format=data_args.file_format, classes=data_args.classes)
    raw = load_classification_dataset(
        data_args.data_files, label_names=label_names, encoding=data_args.encoding, **reader_kwargs
    )
    return data_args.select_samples(raw)


def make_compute_metrics(num_labels: int):
    metric = evaluate.load(metric_path("classification"), keep_in_memory=True)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = (
            eval_prediction.predictions[0]
            if isinstance(eval_prediction.predictions, tuple)
            else eval_prediction.predictions
        )
        scores = metric.compute(
            predictions=np.argmax(logits, axis=-1),
            references=eval_prediction.label_ids,
            labels=list(range(num_labels)),
        )
        return {name: scores[name] for name in REPORTED_METRICS}

    return compute_metrics


def train_and_evaluate(
    raw: datasets.DatasetDict,
    model_args: ModelArguments,
    data_args: DataArguments,
    transfer_args: TransferArguments,
    training_args: TrainingArguments,
    run_args: RunArguments,
) -> dict[str, float]:
    """One run: tokenizer, model and Trainer on raw["train"] (+ "validation", "test"), saved in output_dir."""
    set_seed(training_args.seed)
    if data_args.validation_split_percentage and "train" in raw:
        held_out = raw["train"].train_test_split(
            test_size=data_args.validation_split_percentage / 100, seed=training_args.seed, stratify_by_column="label"
        )
        raw = datasets.DatasetDict({**raw, "train": held_out["train"], "validation": held_out["test"]})
    label_names = (raw["train"] if "train" in raw else next(iter(raw.values()))).features["label"].names
    id2label = dict(enumerate(label_names))

    if transfer_args.lm_adaptation_epochs and training_args.do_train:
        validation = raw["validation"]["text"] if "validation" in raw else None
        model_args = adapt_language_model(raw["train"]["text"], validation, model_args, transfer_args, training_args)
    tokenizer = get_tokenizer(model_args, lambda: iter(raw["train"]["text"]))
    model = build_model(RNNLMForSequenceClassification, model_args, tokenizer, id2label)

    def preprocess(examples):
        truncate = data_args.max_seq_length is not None
        return tokenizer(examples["text"], truncation=truncate, max_length=data_args.max_seq_length)

    with training_args.main_process_first(desc="tokenize"):
        encoded = raw.map(preprocess, batched=True, remove_columns=["text"], desc="Tokenizing")

    trainer = TransferTrainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"] if training_args.do_train else None,
        eval_dataset=encoded.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(len(label_names)),
        transfer_args=transfer_args,
        callbacks=run_args.callbacks(),
    )
    metrics, output = train_evaluate_predict(trainer, training_args, encoded.get("test"))
    if output is not None and trainer.is_world_process_zero():
        predicted = np.argmax(output.predictions, axis=-1)
        lines = [f"{id2label[int(p)]}\t{text}\n" for p, text in zip(predicted, raw["test"]["text"])]
        (Path(training_args.output_dir) / "test_predictions.tsv").write_text("".join(lines), encoding="utf-8")
    return metrics


def cv_summary(values: list[float], prefix: str) -> dict[str, float]:
    """{prefix_mean, prefix_std} over folds' scores (sample std, ddof=1; no std for a single fold)."""
    summary = {f"{prefix}_mean": float(np.mean(values))}
    if len(values) > 1:
        summary[f"{prefix}_std"] = float(np.std(values, ddof=1))
    return summary


def cross_validate(raw, model_args, data_args, transfer_args, training_args, run_args) -> dict[str, float]:
    """k runs, each tested on one fold and trained on the rest (its own tokenizer too); mean and std of test scores."""
    fold_metrics = {}
    for fold, split in enumerate(kfold_splits(raw["train"], k=data_args.cv_folds, seed=training_args.seed)):
        if data_args.cv_fold_indices is not None and fold not in data_args.cv_fold_indices:
            continue
        logger.info(
            "***** Fold %d/%d: %d train, %d test *****", fold + 1, data_args.cv_folds, *map(len, split.values())
        )
        fold_args = copy.deepcopy(training_args)
        fold_args.output_dir = str(Path(training_args.output_dir) / f"fold_{fold}")
        fold_args.do_predict = True
        if "validation" in raw:  # a validation file serves every fold
            split["validation"] = raw["validation"]
        fold_metrics[fold] = train_and_evaluate(split, model_args, data_args, transfer_args, fold_args, run_args)
    metrics = {}
    for name in REPORTED_METRICS:
        metrics.update({f"fold_{fold}_test_{name}": m[f"test_{name}"] for fold, m in fold_metrics.items()})
        metrics.update(cv_summary([m[f"test_{name}"] for m in fold_metrics.values()], f"cv_{name}"))
    logger.info(
        "%d-fold accuracy %.4f +- %.4f over %d folds",
        data_args.cv_folds,
        metrics["cv_accuracy_mean"],
        metrics.get("cv_accuracy_std", float("nan")),
        len(fold_metrics),
    )
    if training_args.should_save:
        path = Path(training_args.output_dir) / "cv_results.json"
        path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    start = time.perf_counter()
    model_args, data_args, transfer_args, training_args, run_args, push_to_hub = start_finetuning(DataArguments, argv)
    if training_args.do_train and data_args.train_file is None:
        raise ValueError("--do_train needs --train_file")
    if training_args.do_eval and not (data_args.validation_file or data_args.validation_split_percentage):
        raise ValueError("--do_eval needs --validation_file or --validation_split_percentage")
    if training_args.do_predict and not (data_args.test_file or data_args.cv_folds):
        raise ValueError("--do_predict needs --test_file (or --cv_folds)")

    # Label names: given, from the train split, or (evaluation only) from the fine-tuned checkpoint.
    label_names = data_args.label_values
    if label_names is None and data_args.train_file is None:
        label_names = checkpoint_labels(model_args, "classifier")
    raw = read_splits(data_args, label_names)
    logger.info(
        "Splits: %s; labels: %s", {k: len(v) for k, v in raw.items()}, raw[next(iter(raw))].features["label"].names
    )

    if data_args.cv_folds:
        metrics = cross_validate(raw, model_args, data_args, transfer_args, training_args, run_args)
        protocol = (
            f"{data_args.cv_folds}-fold stratified cross-validation (seed {training_args.seed}): mean and std of the "
            "test folds' accuracy and macro-F1"
        )
    else:
        metrics = train_and_evaluate(raw, model_args, data_args, transfer_args, training_args, run_args)
        validation = data_args.validation_file or f"{data_args.validation_split_percentage}% of train held out"
        protocol = f"accuracy and macro-F1; validation: {validation}; test: {data_args.test_file}"

    if training_args.should_save:
        save_run_info(
            training_args.output_dir,
            task="sequence-classification",
            command=command_line(argv),
            arguments=public_arguments(model_args, data_args, transfer_args, training_args, run_args),
            metrics=metrics,
            dataset=data_args.dataset_name or str(data_args.train_file or data_args.test_file),
            evaluation_protocol=protocol,
            wall_time_s=round(time.perf_counter() - start, 1),
        )
        if not data_args.cv_folds:  # cross-validation leaves one model per fold, not one to describe
            finish_run(training_args.output_dir, training_args, push_to_hub)
    return metrics


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
