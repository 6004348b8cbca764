"""Train a recurrent language model (Elman RNN, LSTM, GRU) with transformers' Trainer, in the shape of `run_clm.py`.

Without --train_file/--dataset_name it trains on the built-in agreement corpus (the demo: `rnn-lm demo`, or
`train_clm.py training/configs/demo.json`); with no arguments at all it stops and says what to pass. Unless given,
the learning rate is 2e-3 and a loss is logged every 10 steps (Trainer's 5e-5 and 500 are for fine-tuning
transformers). Examples:

    # The classic PTB small recipe (Zaremba et al. 2014), stateful truncated BPTT, SGD with epoch-wise decay:
    python training/train_clm.py training/configs/ptb_small_zaremba.json

    # Your own text, a GRU, AdamW with a cosine schedule, on two CPU processes:
    accelerate launch --config_file training/configs/accelerate/cpu.yaml training/train_clm.py \\
        --train_file my.txt --tokenizer_kind bpe --config_overrides "cell_type=gru,hidden_size=256" \\
        --optim adamw_torch --learning_rate 3e-3 --lr_scheduler_type cosine --output_dir out/gru
"""

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments, default_data_collator, pipeline, set_seed

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.data import (
    StreamSegments,
    eval_stream_segments,
    group_into_blocks,
    load_text_datasets,
    tokenize_to_stream,
)
from rnn_lm_hf.demo_corpus import agreement_accuracy, agreement_pairs, write_demo_corpus
from rnn_lm_hf.evaluation import fresh_start_perplexities, one_stream_metrics
from rnn_lm_hf.hub import finish_run
from rnn_lm_hf.run_info import command_line, public_arguments, save_run_info
from rnn_lm_hf.trainer import RNNLMTrainer, RNNLMTrainingArguments, last_complete_checkpoint
from rnn_lm_hf.training.scaffold import (
    CLM_DEFAULTS,
    ModelArguments,
    RunArguments,
    build_model,
    get_tokenizer,
    parse_script_args,
    run_main,
    start_run,
)


logger = logging.getLogger(__name__)
DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.json"
DEMO_DATASET = "rnn_lm_hf built-in agreement corpus (rnn_lm_hf.demo_corpus)"
DEMO_PROMPTS = ["the writer of the books", "the keys to the cabinet", "the doctors that the author likes"]


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset name (datasets.load_dataset)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "Training text (.txt/.tokens/.raw/.jsonl/.csv)."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation text (else carved from train)."})
    test_file: str | None = field(default=None, metadata={"help": "Test text, evaluated after training."})
    text_column: str = field(default="text", metadata={"help": "Column with the text in json/csv files."})
    validation_split_percentage: int = field(default=5, metadata={"help": "Share of train held out without a file."})
    sample_by: str = field(default="line", metadata={"help": "Text files: one example per 'line' or 'document'."})
    keep_linebreaks: bool = field(default=False, metadata={"help": "Keep newlines (char LMs on raw text)."})
    add_eos: bool = field(default=True, metadata={"help": "Append <eos> after every line (the PTB convention)."})
    block_size: int = field(default=35, metadata={"help": "Truncated-BPTT length: tokens per training segment."})
    variable_bptt: bool = field(
        default=False,
        metadata={"help": "AWD-LSTM's random window length per batch (mean ~block_size), learning rate scaled by it."},
    )
    stateful: bool = field(
        default=True,
        metadata={
            "help": "Carry the hidden state across batches (classic TBPTT); False: shuffled independent blocks."
        },
    )
    num_samples: int = field(default=3, metadata={"help": "Generated samples printed after training."})
    demo_sentences: int = field(default=20000, metadata={"help": "Built-in corpus size when no data is given."})

    def __post_init__(self):
        if self.block_size < 1:
            raise ValueError(f"--block_size must be a positive int, got {self.block_size}.")
        if self.variable_bptt and not self.stateful:
            raise ValueError("--variable_bptt cuts the carried streams: it needs --stateful true.")

    @property
    def is_demo(self) -> bool:
        return self.train_file is None and self.dataset_name is None


def parse_arguments(
    argv: list[str] | None,
) -> tuple[ModelArguments, DataArguments, RNNLMTrainingArguments, RunArguments]:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # never a silent demo run over outputs/rnn-lm-demo
        raise ValueError(
            "nothing to train on: pass --train_file FILE (or --dataset_name NAME) and --output_dir DIR, or a config "
            "file such as training/configs/ptb_small_zaremba.json; `rnn-lm demo` trains the built-in demo"
        )
    parsed = parse_script_args(
        (ModelArguments, DataArguments, RNNLMTrainingArguments, RunArguments), argv, CLM_DEFAULTS
    )
    if parsed[2].lr_schedule_over_time and parsed[3].max_train_minutes is None:
        raise ValueError(
            "--lr_schedule_over_time runs the schedule over the time budget: set --max_train_minutes too."
        )
    return parsed


def build_datasets(raw, tokenizer, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """Token streams cut into stateful segments or shuffled blocks, per split."""
    splits = {}
    with training_args.main_process_first(desc="tokenizing"):
        for split, dataset in raw.items():
            stream = tokenize_to_stream(
                dataset, tokenizer, text_column=data_args.text_column, add_eos=data_args.add_eos
            )
            name = f"{split} split"
            if not data_args.stateful:
                splits[split] = group_into_blocks(stream, data_args.block_size, tokenizer.pad_token_id, name=name)
            elif split == "train":
                splits[split] = StreamSegments(
                    stream,
                    data_args.block_size,
                    training_args.per_device_train_batch_size,
                    training_args.world_size,
                    tokenizer.pad_token_id,
                    name=name,
                    variable_bptt=data_args.variable_bptt,
                    seed=training_args.seed,
                )
            else:
                splits[split] = eval_stream_segments(
                    stream,
                    data_args.block_size,
                    training_args.world_size,
                    training_args.per_device_eval_batch_size,
                    tokenizer.pad_token_id,
                    name=name,
                )
    return splits


def generate_samples(model, tokenizer, prompts: list[str], seed: int) -> list[str]:
    set_seed(seed)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device=model.device)
    # No cleanup of spaces before punctuation: transformers < 5.25 applied it in this pipeline by default, so the
    # same model printed other text on another release (and PTB-style text keeps " .").
    outputs = generator(
        prompts, max_new_tokens=20, do_sample=True, top_k=40, temperature=0.8, clean_up_tokenization_spaces=False
    )
    return [output[0]["generated_text"] for output in outputs]


def main(argv: list[str] | None = None) -> dict[str, float]:
    return train(*parse_arguments(argv), command=command_line(argv))


def build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: RNNLMTrainingArguments,
    run_args: RunArguments,
) -> tuple[RNNLMTrainer, dict, dict]:
    """The run's data, tokenizer, model and `RNNLMTrainer`, as `train` builds them (also what bench/speed.py times):
    returns the trainer, the raw text splits and their token datasets."""
    logger.setLevel(training_args.get_process_log_level())
    # Stateful batches carry keys the model does not take (shift_labels, stream ids): keep them.
    training_args.remove_unused_columns = False

    is_demo = data_args.is_demo
    if is_demo:
        data_dir = Path(training_args.output_dir) / "data"
        with training_args.main_process_first(desc="writing the demo corpus"):
            files = write_demo_corpus(data_dir, num_train=data_args.demo_sentences, seed=training_args.seed)
        data_args.train_file, data_args.validation_file, data_args.test_file = (
            files["train"],
            files["validation"],
            files["test"],
        )
    raw = load_text_datasets(
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=data_args.test_file,
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        text_column=data_args.text_column,
        validation_split_percentage=data_args.validation_split_percentage,
        seed=training_args.seed,
        sample_by=data_args.sample_by,
        keep_linebreaks=data_args.keep_linebreaks,
    )
    tokenizer = get_tokenizer(model_args, lambda: raw["train"][data_args.text_column])
    model = build_model(RNNLMForCausalLM, model_args, tokenizer)
    if model.config.bidirectional and data_args.stateful:
        raise ValueError(
            "a bidirectional LM cannot carry its state from batch to batch (its backward direction would need the "
            "text that follows): pass --stateful false, so it trains and is evaluated on independent blocks"
        )
    splits = build_datasets(raw, tokenizer, data_args, training_args)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"{model.config.cell_type.upper()} LM, {n_params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}")

    trainer = RNNLMTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("validation"),
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=run_args.callbacks(Path(training_args.output_dir) / "training_log.csv"),
    )
    return trainer, raw, splits


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: RNNLMTrainingArguments,
    run_args: RunArguments,
    command: str | None = None,
) -> dict[str, float]:
    """The whole run from parsed arguments (`main` parses a command line; other scripts call this directly, as
    ULMFiT's target-task LM fine-tuning does); `command` is what run_info.json records as the way to re-run it."""
    started = time.time()
    push_to_hub = start_run(training_args, run_args)
    is_demo = data_args.is_demo  # before build_trainer fills in the demo corpus's files
    trainer, raw, splits = build_trainer(model_args, data_args, training_args, run_args)
    model, tokenizer = trainer.model, trainer.processing_class

    metrics: dict[str, float] = {}
    if training_args.do_train or is_demo:
        resume = training_args.resume_from_checkpoint
        if resume in ("auto", "True", "true", True):  # the newest checkpoint whose save completed
            resume = last_complete_checkpoint(training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()  # model, config with auto_map, code files, tokenizer, generation config
        metrics.update(result.metrics)
        if training_args.world_size > 1:  # every process reports its weights: DDP replicas must be identical
            checksum = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
            print(
                f"[replica {training_args.process_index}/{training_args.world_size}] parameter checksum {checksum:.12e}"
            )
    streams = {}
    for split in ("validation", "test"):
        if split not in splits:
            continue
        prefix = "eval" if split == "validation" else split
        if data_args.stateful:
            # The final numbers: ONE stream carried over the whole split, the published protocol and what `rnn-lm
            # evaluate` gives (evaluations during training use per_device_eval_batch_size parallel streams, faster
            # but each stream start loses its context). Every process scores the whole split itself.
            streams[split] = tokenize_to_stream(
                raw[split], tokenizer, text_column=data_args.text_column, add_eos=data_args.add_eos
            )
            final = one_stream_metrics(
                trainer.model, streams[split], data_args.block_size, prefix, tokenizer.pad_token_id, f"{split} split"
            )
            trainer.log(final)
        else:
            final = trainer.evaluate(splits[split], metric_key_prefix=prefix)
        metrics.update(final)
    if "validation" in raw and data_args.add_eos:
        # How well a fresh (zero) state starts each line, as generation from a prompt does, against the stream.
        stream = streams.get("validation")
        if stream is None:
            stream = tokenize_to_stream(raw["validation"], tokenizer, text_column=data_args.text_column)
        starts = fresh_start_perplexities(model, stream, tokenizer.eos_token_id)
        metrics.update({f"eval_{key}": value for key, value in starts.items()})
    if is_demo:
        metrics["agreement_accuracy"] = agreement_accuracy(model, tokenizer, agreement_pairs(500, seed=1))
    trainer.save_metrics("all", metrics)

    if trainer.is_world_process_zero():
        prompts = DEMO_PROMPTS if is_demo else [tokenizer.decode(splits["train"][0]["input_ids"][:5])]
        if model.config.bidirectional:  # a bidirectional LM scores text; it cannot generate
            prompts = []
        if prompts := prompts[: data_args.num_samples]:
            for sample in generate_samples(model, tokenizer, prompts, training_args.seed):
                print(f"[sample] {sample.strip()}")
        protocol = (
            f"stateful stream perplexity (one stream, the state carried over the whole split, bptt {data_args.block_size})"
            if data_args.stateful
            else f"per-block perplexity (blocks of {data_args.block_size}, zero initial state)"
        )
        save_run_info(
            training_args.output_dir,
            task="causal-lm",
            command=command,
            arguments=public_arguments(model_args, data_args, training_args, run_args),
            metrics=metrics,
            dataset=DEMO_DATASET if is_demo else data_args.dataset_name or data_args.train_file,
            evaluation_protocol=protocol,
            wall_time_s=round(time.time() - started, 1),
        )
        finish_run(training_args.output_dir, training_args, push_to_hub)
        ppl = {key: round(value, 2) for key, value in metrics.items() if key.endswith("perplexity")}
        agreement = (
            f", subject-verb agreement accuracy {metrics['agreement_accuracy']:.3f}"
            if "agreement_accuracy" in metrics
            else ""
        )
        print(
            f"[result] perplexity {ppl}{agreement} (vocabulary {len(tokenizer)}); model saved to "
            f"{training_args.output_dir}"
        )
    return metrics


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
