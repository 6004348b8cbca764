"""The peer for the taggers of section 4 (issue 13): flair's BiLSTM-CRF `SequenceTagger` with character embeddings.

It does not import rnn_lm_hf and runs in its own virtualenv (flair pins its own transformers). Nothing is downloaded:
no pretrained vectors, and the character dictionary is built from the training split (flair's default
`CharacterEmbeddings()` fetches its "common-chars" list from the web). Embeddings: flair's `CharacterEmbeddings`
(Lample et al. 2016: a char BiLSTM, 25+25) stacked with `OneHotEmbeddings`, a word embedding initialised at random
and trained from scratch on the training vocabulary (`--embeddings char` drops it). Everything else is flair's
default: hidden 256, 1 layer, CRF, locked dropout 0.5, word dropout 0.05, SGD at lr 0.1, batch 32, anneal on
plateau, epoch selected on dev, test scored once with flair's own evaluation (UPOS: token accuracy; WNUT-17: micro
F1 over exact-match entity spans, what conlleval counts). Training stops at the last epoch boundary that fits the
wall-time budget (`--minutes`, per-epoch dev evaluation included).

Two flair 0.15.1 defects bite this setup, both measured here (BENCHMARKS.md 4.5): with flair's default
`embeddings_storage_mode="cpu"` the dev split keeps its first-epoch vectors (so we pass "none"), and
`CharacterEmbeddings` gives a repeated word's first occurrence another word's vector (`--fix_char_embeddings`).

Usage (from the repository root; one thread, as for our rows):
    python3 -m venv .venv-flair && .venv-flair/bin/pip install flair
    OMP_NUM_THREADS=1 .venv-flair/bin/python bench/peer_flair.py --task ud_ewt_upos --minutes 10 \
        --out bench/results/peer_flair_cpu.json
    OMP_NUM_THREADS=1 .venv-flair/bin/python bench/peer_flair.py --task wnut17 --minutes 10 --fix_char_embeddings
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path


DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TASKS = {
    # task: (folder, train, dev, test, label type, metric)
    "ud_ewt_upos": (
        "ud_english_ewt",
        "en_ewt-ud-train.conllu",
        "en_ewt-ud-dev.conllu",
        "en_ewt-ud-test.conllu",
        "upos",
        "accuracy",
    ),
    "wnut17": ("wnut17", "wnut17train.conll", "emerging.dev.conll", "emerging.test.annotated", "ner", "entity_f1"),
}


def read_sentences(path: Path, row) -> list[list[tuple[str, str]]]:
    """Blank-line separated sentences of `row(line)` pairs; lines for which `row` returns None are skipped."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
        elif (pair := row(line)) is not None:
            current.append(pair)
    if current:
        sentences.append(current)
    return sentences


def read_conllu_upos(path: Path) -> list[list[tuple[str, str]]]:
    """(form, UPOS) per syntactic word; comments, multiword-token lines (`3-4`) and empty nodes (`8.1`) skipped."""

    def row(line: str) -> tuple[str, str] | None:
        cols = line.split("\t")
        if line.startswith("#") or "-" in cols[0] or "." in cols[0]:
            return None
        return cols[1], cols[3]

    return read_sentences(path, row)


def read_wnut(path: Path) -> list[list[tuple[str, str]]]:
    """(token, IOB2 tag) per line `token<TAB>tag`; a blank line ends a post."""

    def row(line: str) -> tuple[str, str]:
        token, tag = line.split("\t")
        return token, tag.strip()

    return read_sentences(path, row)


def write_columns(sentences: list[list[tuple[str, str]]], path: Path) -> None:
    """The two-column file flair's ColumnCorpus reads: `token<TAB>tag`, a blank line after each sentence."""
    lines = []
    for sentence in sentences:
        lines.extend(f"{token}\t{tag}" for token, tag in sentence)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare(task: str, data: Path, work: Path) -> dict[str, int]:
    """Convert the task's three splits into `work/{train,dev,test}.txt`; returns sentences per split."""
    folder, *files, _label, _metric = TASKS[task]
    reader = read_conllu_upos if task == "ud_ewt_upos" else read_wnut
    work.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, name in zip(("train", "dev", "test"), files):
        sentences = reader(data / folder / name)
        write_columns(sentences, work / f"{split}.txt")
        sizes[split] = len(sentences)
    return sizes


def char_counts(sentences: list[list[tuple[str, str]]]) -> Counter:
    """Character frequencies of the tokens, for the character dictionary (flair's own list is a download)."""
    return Counter(char for sentence in sentences for token, _tag in sentence for char in token)


def fix_character_embeddings(CharacterEmbeddings, torch) -> None:
    """Patch flair 0.15.1's `CharacterEmbeddings._add_embeddings_internal`, which sorts a sentence's words by length
    for packing and maps them back by comparing character ids: when a word occurs twice, one occurrence gets another
    word's vector (in "a cat a" the first "a" gets the vector of "cat"). Same computation, with the sort permutation
    kept instead."""

    def add_embeddings(self, sentences):
        for sentence in sentences:
            # (words,) char ids per word, then the words longest first, as pack_padded_sequence wants
            ids = [[self.char_dictionary.get_idx_for_item(char) for char in token.text] for token in sentence]
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
            lengths = [len(ids[i]) for i in order]
            chars = torch.zeros((len(ids), lengths[0]), dtype=torch.long, device=flair_device())
            for row, i in enumerate(order):
                chars[row, : lengths[row]] = torch.tensor(ids[i], dtype=torch.long)
            packed = torch.nn.utils.rnn.pack_padded_sequence(self.char_embedding(chars).transpose(0, 1), lengths)
            outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(self.char_rnn(packed)[0])
            # (words, 2 * hidden_size_char): each word's output at its last character, as flair does
            last = outputs[torch.tensor(lengths) - 1, torch.arange(len(ids))]
            vectors = torch.empty_like(last)
            vectors[torch.tensor(order)] = last
            for token, vector in zip(sentence, vectors):
                token.set_embedding(self.name, vector)

    CharacterEmbeddings._add_embeddings_internal = add_embeddings


def flair_device():
    import flair

    return flair.device


def train(args: argparse.Namespace) -> dict:
    import flair
    import torch
    from flair.data import Dictionary
    from flair.datasets import ColumnCorpus
    from flair.embeddings import CharacterEmbeddings, OneHotEmbeddings, StackedEmbeddings
    from flair.models import SequenceTagger
    from flair.trainers import ModelTrainer
    from flair.trainers.plugins import TrainerPlugin, TrainingInterrupt

    class WallTimeBudget(TrainerPlugin):
        """Before each epoch, stop if one more epoch as long as the longest so far (dev evaluation and saving
        included) would overrun the budget; the best dev epoch is then tested, as after a normal run."""

        def __init__(self, seconds: float):
            super().__init__()
            self.seconds, self.epoch_seconds, self.last = seconds, [], None

        @TrainerPlugin.hook
        def after_setup(self, **kwargs):
            self.start = time.perf_counter()

        @TrainerPlugin.hook
        def before_training_epoch(self, epoch, **kwargs):
            now = time.perf_counter()
            if self.last is not None:
                self.epoch_seconds.append(now - self.last)
                if now - self.start + max(self.epoch_seconds) > self.seconds:
                    raise TrainingInterrupt(f"wall-time budget: stopping before epoch {epoch}")
            self.last = now

    if args.fix_char_embeddings:
        fix_character_embeddings(CharacterEmbeddings, torch)
    torch.set_num_threads(args.threads)
    flair.set_seed(args.seed)
    label_type = TASKS[args.task][4]
    sizes = prepare(args.task, args.data, args.work)
    corpus = ColumnCorpus(args.work, {0: "text", 1: label_type}, column_delimiter="\t", in_memory=True)
    tag_dictionary = corpus.make_label_dictionary(label_type=label_type, add_unk=False)

    chars = Dictionary(add_unk=True)  # unseen characters map to <unk>
    train_sentences = [[(t.text, "") for t in s] for s in corpus.train]
    for char, _count in char_counts(train_sentences).most_common():
        chars.add_item(char)
    embeddings = [CharacterEmbeddings(path_to_char_dict=chars)]
    if args.embeddings == "char+word":
        embeddings.append(OneHotEmbeddings.from_corpus(corpus, min_freq=args.min_freq, embedding_length=args.word_dim))
    tagger = SequenceTagger(
        embeddings=StackedEmbeddings(embeddings),
        tag_dictionary=tag_dictionary,
        tag_type=label_type,
        hidden_size=args.hidden_size,
        use_crf=True,
    )
    budget = WallTimeBudget(args.minutes * 60)
    start = time.perf_counter()
    # for UPOS every token has one gold tag and none is "O", so flair's micro-avg F1 is token accuracy
    ModelTrainer(tagger, corpus).train(
        args.work / "model",
        learning_rate=args.learning_rate,
        mini_batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        main_evaluation_metric=("micro avg", "f1-score"),
        plugins=[budget],
        save_final_model=False,
        create_file_logs=False,
        # flair's default "cpu" keeps the dev split's first-epoch char and word vectors: embed() skips tokens that
        # already hold a vector, so later dev scores (and the epoch choice) mix stale and current weights
        embeddings_storage_mode=args.embeddings_storage_mode,
    )
    train_test_s = time.perf_counter() - start

    dev = tagger.evaluate(corpus.dev, gold_label_type=label_type, mini_batch_size=64)
    test = tagger.evaluate(corpus.test, gold_label_type=label_type, mini_batch_size=64)
    return {
        "sizes": sizes,
        "params": sum(p.numel() for p in tagger.parameters()),
        "vocab_chars": len(chars),
        "vocab_words": len(embeddings[1].vocab_dictionary) if len(embeddings) > 1 else None,
        "epochs": len(budget.epoch_seconds),
        "epoch_minutes": [round(t / 60, 2) for t in budget.epoch_seconds],
        "train_and_test_s": round(train_test_s, 1),
        "dev_scores": {"micro_f1": dev.main_score, "accuracy": dev.scores["accuracy"]},
        "test_scores": {"micro_f1": test.main_score, "accuracy": test.scores["accuracy"]},
        "versions": {"flair": flair.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="flair BiLSTM-CRF with character embeddings, no pretrained vectors")
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="wall-time budget for training (dev eval included)"
    )
    parser.add_argument("--embeddings", choices=("char+word", "char"), default="char+word")
    parser.add_argument(
        "--fix_char_embeddings", action="store_true", help="patch flair 0.15.1's word-order bug in CharacterEmbeddings"
    )
    parser.add_argument(
        "--embeddings_storage_mode", choices=("none", "cpu"), default="none", help="flair's default is cpu (stale dev)"
    )
    parser.add_argument("--word_dim", type=int, default=100, help="size of the from-scratch word embedding")
    parser.add_argument("--min_freq", type=int, default=2, help="training-split count for a word to get a vector")
    parser.add_argument("--hidden_size", type=int, default=256, help="BiLSTM hidden size per direction")
    parser.add_argument("--learning_rate", type=float, default=0.1, help="SGD learning rate (flair's default)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_epochs", type=int, default=100, help="upper limit; the budget stops earlier")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding ud_english_ewt/ and wnut17/")
    parser.add_argument(
        "--work", type=Path, default=None, help="column files and model (default runs/peer_flair/TASK)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON list to append the run's row to")
    args = parser.parse_args(argv)
    fixed = "-fixed" if args.fix_char_embeddings else ""
    args.work = args.work or Path("runs") / "peer_flair" / f"{args.task}-{args.embeddings}-{args.minutes:g}min{fixed}"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    run = train(args)
    key = "accuracy" if TASKS[args.task][5] == "accuracy" else "micro_f1"
    row = {
        "task": args.task,
        "metric": TASKS[args.task][5],
        "test": round(100 * run["test_scores"][key], 2),
        "dev": round(100 * run["dev_scores"][key], 2),
        "embeddings": args.embeddings,
        "fix_char_embeddings": args.fix_char_embeddings,
        "embeddings_storage_mode": args.embeddings_storage_mode,
        "budget_minutes": args.minutes,
        "wall_minutes": round((time.perf_counter() - start) / 60, 2),
        "threads": args.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        **run,
        "device": f"CPU, {args.threads} thread(s): {cpu_name()}",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["OMP_NUM_THREADS=1", ".venv-flair/bin/python", "bench/peer_flair.py", *sys.argv[1:]]),
    }
    print(json.dumps(row, indent=2))
    if args.out:
        rows = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps([*rows, row], indent=2) + "\n")
    return row


if __name__ == "__main__":
    main()
