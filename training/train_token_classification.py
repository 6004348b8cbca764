"""Fine-tune an RNN-LM tagger (NER, POS) on CoNLL column files or CoNLL-U, in the shape of transformers' `run_ner.py`.

From scratch (a word-level tokenizer trained on the train split, a BiLSTM from the config defaults + overrides):

    python training/train_token_classification.py training/configs/tagger_bilstm_tiny.json

From a causal-LM checkpoint (ULMFiT-style transfer: its embeddings and recurrent layers, a new tagging head):

    python training/train_token_classification.py --model_name_or_path runs/lm_wikitext2 \\
        --train_file train.conll --validation_file dev.conll --test_file test.conll \\
        --layerwise_lr_decay 2.6 --gradual_unfreezing --do_train --do_eval --do_predict --output_dir runs/ner

Tags come from the train split and are stored in the config (`id2label`/`label2id`). Entity tags (`B-PER`, IOB1,
IOB2 or BIOES) are scored with entity-level F1 (seqeval semantics) plus token accuracy; other tags (UPOS, XPOS) with
token accuracy. Data errors exit with status 2 and one line naming the file and line. Unless given, the learning
rate is 5e-3 and a loss is logged every 10 steps (Trainer's 5e-5 and 500 are for fine-tuning pretrained
transformers: on the tiny NER fixture 40 steps reach entity F1 0.36 at 5e-5, 1.0 at 5e-3).
"""

import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
from transformers import DataCollatorForTokenClassification

from rnn_lm_hf import RNNLMForTokenClassification
from rnn_lm_hf.hub import finish_run
from rnn_lm_hf.metrics import metric_path
from rnn_lm_hf.run_info import command_line, public_arguments, save_run_info
from rnn_lm_hf.tagging_data import (
    LABEL_SUB_TOKENS,
    label_list,
    load_tagging_dataset,
    strip_ignored,
    tokenize_and_align_labels,
)
from rnn_lm_hf.training.finetuning import (
    SplitArguments,
    TransferTrainer,
    adapt_language_model,
    checkpoint_labels,
    start_finetuning,
    train_evaluate_predict,
)
from rnn_lm_hf.training.scaffold import build_model, get_tokenizer, run_main


logger = logging.getLogger(__name__)

LABEL_SCHEMES = ("auto", "IOB1", "IOB2", "BIOES", "none")
CHUNK_TAG = re.compile(r"^(O|[BIES]-.+)$")


@dataclass
class DataArguments(SplitArguments):
    """Which files to read and how to score them (files: CoNLL columns or CoNLL-U)."""

    file_format: str | None = field(
        default=None, metadata={"help": "'conll' or 'conllu' (default: 'conllu' for *.conllu files, else 'conll')."}
    )
    token_column: int = field(default=0, metadata={"help": "CoNLL: column of the token (0-based)."})
    tag_column: int = field(default=-1, metadata={"help": "CoNLL: column of the tag (negative counts from the end)."})
    conllu_tag: str = field(default="upos", metadata={"help": "CoNLL-U: tag column, 'upos' or 'xpos'."})
    unknown_label: str | None = field(
        default=None,
        metadata={"help": "Map tags of eval/test files unseen in training to this label (e.g. O) instead of failing."},
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "Label every sub-token of a word (B-X -> I-X after the first), not only the first one "
            "(only with --label_sub_token first)."
        },
    )
    label_sub_token: str = field(
        default="first",
        metadata={
            "help": f"Which sub-token of a word carries its tag, one of {', '.join(LABEL_SUB_TOKENS)}. first: "
            "run_ner's rule, for bidirectional encoders. last: for unidirectional (left-to-right) encoders, e.g. "
            "taggers initialised from a causal LM: a left-to-right model reads a word's first piece before the rest "
            "of it, so at the first piece it would guess the tag from a word fragment, while at the last piece it "
            "has seen the whole word. With last, read the model's predictions at each word's last sub-token (token-"
            "classification pipeline with aggregation_strategy='none'): the pipeline's word aggregations (first, "
            "average, max) assume first-sub-token training."
        },
    )
    label_scheme: str = field(
        default="auto",
        metadata={
            "help": f"One of {LABEL_SCHEMES}. auto: entity F1 with conlleval chunking when all tags are O or "
            "B-/I-/E-/S-X, else token accuracy only. IOB1/IOB2/BIOES: strict seqeval. none: token accuracy only."
        },
    )
    return_entity_level_metrics: bool = field(default=False, metadata={"help": "Also report F1 per entity type."})
    flair_word_features: bool = field(
        default=False,
        metadata={
            "help": "A character-level, bidirectional tagger (--tokenizer_kind char, or a character-level "
            "bidirectional LM as --model_name_or_path) reading Flair's word features (Akbik et al. 2018): the "
            "forward state after each word's last character and the backward state at its first. Needs "
            "--label_sub_token last."
        },
    )

    def __post_init__(self):
        if not (self.train_file or self.validation_file or self.test_file):
            raise ValueError("pass --train_file (and --validation_file / --test_file) with CoNLL or CoNLL-U data")
        for option in ("train_file", "validation_file", "test_file"):
            path = getattr(self, option)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"--{option} {path}: no such file (relative to {Path.cwd()})")
        if self.file_format not in (None, "conll", "conllu"):
            raise ValueError(f"--file_format must be 'conll' or 'conllu', got {self.file_format!r}")
        if self.conllu_tag not in ("upos", "xpos"):
            raise ValueError(f"--conllu_tag must be 'upos' or 'xpos', got {self.conllu_tag!r}")
        if self.label_sub_token not in LABEL_SUB_TOKENS:
            raise ValueError(
                f"--label_sub_token must be one of {', '.join(LABEL_SUB_TOKENS)}, got {self.label_sub_token!r} "
                "(last is for left-to-right encoders such as LM-pretrained taggers)"
            )
        if self.label_all_tokens and self.label_sub_token != "first":
            raise ValueError("--label_all_tokens only goes with --label_sub_token first (it labels every sub-token)")
        if self.label_scheme not in LABEL_SCHEMES:
            raise ValueError(f"--label_scheme must be one of {', '.join(LABEL_SCHEMES)}, got {self.label_scheme!r}")
        if self.flair_word_features and self.label_sub_token != "last":
            raise ValueError(
                "--flair_word_features reads each word's features at its last character: pass --label_sub_token last"
            )


def read_splits(data_args: DataArguments, labels: list[str] | None) -> tuple[datasets.DatasetDict, list[str]]:
    """The splits, every tag checked against `labels` (default: the whole train split's, before --max_train_samples)."""
    data_files = data_args.data_files
    first = next(iter(data_files.values()))
    file_format = data_args.file_format or ("conllu" if first.endswith(".conllu") else "conll")
    reader_kwargs = (
        {"tag": data_args.conllu_tag}
        if file_format == "conllu"
        else {"token_column": data_args.token_column, "tag_column": data_args.tag_column}
    )
    raw = load_tagging_dataset(
        data_files,
        file_format=file_format,
        labels=labels,
        unknown_label=data_args.unknown_label,
        encoding=data_args.encoding,
        **reader_kwargs,
    )
    labels = labels or label_list(raw["train"])  # before --max_train_samples cuts the split
    return data_args.select_samples(raw), labels


def word_prefix(tokenizer) -> str:
    """What to put before every word but the first so split words encode like running text (as pipelines see it)."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if type(pre_tokenizer).__name__ == "ByteLevel" and not getattr(pre_tokenizer, "add_prefix_space", True):
        return " "  # byte-level BPE: mid-sentence words start with a space byte (Ġword)
    if tokenizer(" ", add_special_tokens=False).input_ids:
        raise ValueError(
            "the tokenizer turns spaces into tokens (character level?), so the first sub-token of a word would not "
            "be the one labelled in running text; use --tokenizer_kind word or bpe"
        )
    return ""


def character_id(tokenizer, character: str) -> int:
    """The id of one character in a character-level tokenizer, or a clear error for any other tokenizer."""
    ids = tokenizer(character, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"the tokenizer does not encode {character!r} as one token of its own, so Flair's word features cannot "
            "find the words: use a character-level tokenizer (--tokenizer_kind char) or a character-level LM"
        )
    return ids[0]


def chunk_scheme(data_args: DataArguments, labels: list[str]) -> str | None:
    """The seqeval scheme to score with, "conlleval" for default chunking, or None for token accuracy only."""
    if data_args.label_scheme == "none":
        return None
    if data_args.label_scheme != "auto":
        return data_args.label_scheme
    return "conlleval" if all(CHUNK_TAG.match(label) for label in labels) and labels != ["O"] else None


def make_compute_metrics(id2label: dict[int, str], scheme: str | None, entity_level: bool):
    accuracy = evaluate.load(metric_path("accuracy"), keep_in_memory=True)
    seqeval = evaluate.load(metric_path("seqeval_f1"), keep_in_memory=True) if scheme else None

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids  # (batch, seq_len) ids
        metrics = {
            "accuracy": accuracy.compute(predictions=predictions.ravel(), references=labels.ravel())["accuracy"]
        }
        if seqeval is not None:
            pred_tags, true_tags = strip_ignored(predictions, labels, id2label)
            scores = seqeval.compute(
                predictions=pred_tags, references=true_tags, scheme=None if scheme == "conlleval" else scheme
            )
            metrics.update({name: scores[f"overall_{name}"] for name in ("precision", "recall", "f1")})
            if entity_level:
                for entity_type, values in scores.items():
                    if isinstance(values, dict):
                        metrics.update(
                            {f"{entity_type}_{name}": values[name] for name in ("precision", "recall", "f1")}
                        )
        return metrics

    return compute_metrics


def write_predictions(path: Path, sentences: list[list[str]], gold: list[list[str]], predictions, label_ids, id2label):
    """CoNLL `token gold predicted` lines (conlleval's input) when there is one prediction per word.

    `strip_ignored` keeps the one labelled sub-token of each word, in order, whether that is its first or its last.
    """
    pred_tags, _ = strip_ignored(predictions, label_ids, id2label)
    if any(len(p) != len(words) for p, words in zip(pred_tags, sentences)):
        logger.warning("Not writing %s: truncation or --label_all_tokens gives more or fewer tags than words", path)
        return
    with path.open("w", encoding="utf-8") as f:
        for words, gold_tags, tags in zip(sentences, gold, pred_tags):
            f.writelines(f"{w} {g} {p}\n" for w, g, p in zip(words, gold_tags, tags))
            f.write("\n")


def main(argv: list[str] | None = None) -> dict[str, float]:
    start = time.perf_counter()
    model_args, data_args, transfer_args, training_args, run_args, push_to_hub = start_finetuning(DataArguments, argv)
    for flag, option in (("do_train", "train_file"), ("do_eval", "validation_file"), ("do_predict", "test_file")):
        if getattr(training_args, flag) and getattr(data_args, option) is None:
            raise ValueError(f"--{flag} needs --{option}")

    # Labels: from the train split, or (evaluation only) from the fine-tuned checkpoint.
    labels = checkpoint_labels(model_args, "tagger") if data_args.train_file is None else None
    raw, labels = read_splits(data_args, labels)
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in id2label.items()}
    logger.info("%d labels: %s", len(labels), labels)

    if transfer_args.lm_adaptation_epochs and training_args.do_train:
        texts = {split: [" ".join(tokens) for tokens in raw[split]["tokens"]] for split in ("train", "validation")
                 if split in raw}  # fmt: skip
        model_args = adapt_language_model(
            texts["train"], texts.get("validation"), model_args, transfer_args, training_args
        )
    tokenizer = get_tokenizer(model_args, lambda: (" ".join(tokens) for tokens in raw["train"]["tokens"]))
    flair = {"word_separator_id": character_id(tokenizer, " ")} if data_args.flair_word_features else {}
    model = build_model(RNNLMForTokenClassification, model_args, tokenizer, id2label, flair)
    # Flair's features split words at spaces: a character-level tokenizer then encodes each space as a token.
    prefix = " " if model.config.word_separator_id is not None else word_prefix(tokenizer)

    def preprocess(examples):
        words = [[word if i == 0 else prefix + word for i, word in enumerate(s)] for s in examples["tokens"]]
        encoded = tokenize_and_align_labels(
            {"tokens": words, "tags": examples["tags"]},
            tokenizer,
            label2id,
            label_all_tokens=data_args.label_all_tokens,
            max_length=data_args.max_seq_length,
            label_sub_token=data_args.label_sub_token,
        )
        return {key: encoded[key] for key in ("input_ids", "attention_mask", "labels")}

    with training_args.main_process_first(desc="tokenize and align labels"):
        encoded = raw.map(preprocess, batched=True, remove_columns=["tokens", "tags"], desc="Tokenizing")

    scheme = chunk_scheme(data_args, labels)
    logger.info("Scoring with %s", f"entity F1 ({scheme}) and token accuracy" if scheme else "token accuracy")
    trainer = TransferTrainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"] if training_args.do_train else None,
        eval_dataset=encoded.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=make_compute_metrics(id2label, scheme, data_args.return_entity_level_metrics),
        # Keep argmax ids, not (batch, seq_len, num_labels) logits, across the eval loop.
        preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
        transfer_args=transfer_args,
        callbacks=run_args.callbacks(),
    )

    metrics, output = train_evaluate_predict(trainer, training_args, encoded.get("test"))
    if data_args.label_sub_token == "last" and trainer.is_world_process_zero():
        logger.info(
            "--label_sub_token last: read predictions at each word's last sub-token (token-classification pipeline "
            "with aggregation_strategy='none'); its first/average/max word aggregations assume first-sub-token tags."
        )
    if output is not None and trainer.is_world_process_zero():
        write_predictions(
            Path(training_args.output_dir) / "test_predictions.conll",
            raw["test"]["tokens"],
            raw["test"]["tags"],
            output.predictions,
            output.label_ids,
            id2label,
        )

    if trainer.is_world_process_zero():
        metric_name = f"entity F1 ({scheme}) and token accuracy" if scheme else "token accuracy"
        save_run_info(
            training_args.output_dir,
            task="token-classification",
            command=command_line(argv),
            arguments=public_arguments(model_args, data_args, transfer_args, training_args, run_args),
            metrics=metrics,
            dataset=data_args.dataset_name or str(data_args.train_file or data_args.test_file),
            evaluation_protocol=f"{metric_name} on the {data_args.label_sub_token} sub-token of every word; "
            f"validation: {data_args.validation_file}, test: {data_args.test_file}",
            wall_time_s=round(time.perf_counter() - start, 1),
        )
        finish_run(training_args.output_dir, training_args, push_to_hub)
    return metrics


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
