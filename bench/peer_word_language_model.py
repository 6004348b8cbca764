"""The peer: pytorch/examples `word_language_model` (main.py + model.py + data.py, LSTM only) in one bare-PyTorch file.

It does not import rnn_lm_hf: it is the independent reference our PTB numbers are compared with. Same data handling,
model, initialisation, training loop and schedule as the original; what is added is a wall-time budget, a thread
count, a smoke mode (first N lines of each split) and a JSON record of the run.

Usage (the defaults are the issue's recipe: 2x200 tied LSTM, dropout 0.2, lr 20, clip 0.25, bptt 35, batch 20):
    OMP_NUM_THREADS=1 python bench/peer_word_language_model.py --threads 1 --save /tmp/peer.pt --out peer.json
    OMP_NUM_THREADS=1 python bench/peer_word_language_model.py --max_minutes 2 --epochs 1 --save /tmp/peer.pt
"""

import argparse
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
EVAL_BATCH_SIZE = 10
SPLITS = ("train", "valid", "test")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="pytorch/examples word_language_model (LSTM), bare PyTorch")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with ptb.{train,valid,test}.txt")
    parser.add_argument("--emsize", type=int, default=200, help="size of word embeddings")
    parser.add_argument("--nhid", type=int, default=200, help="number of hidden units per layer")
    parser.add_argument("--nlayers", type=int, default=2, help="number of layers")
    parser.add_argument("--lr", type=float, default=20.0, help="initial learning rate")
    parser.add_argument("--clip", type=float, default=0.25, help="gradient clipping")
    parser.add_argument("--epochs", type=int, default=40, help="upper epoch limit")
    parser.add_argument("--batch_size", type=int, default=20, help="batch size")
    parser.add_argument("--bptt", type=int, default=35, help="sequence length")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout applied to layers (0 = no dropout)")
    parser.add_argument("--tied", action=argparse.BooleanOptionalAction, default=True, help="tie embedding/softmax")
    parser.add_argument("--seed", type=int, default=1111, help="random seed")
    parser.add_argument("--log_interval", type=int, default=200, help="report interval (batches)")
    parser.add_argument(
        "--save", type=Path, default=Path("runs/peer_word_language_model.pt"), help="path to save the best model"
    )
    parser.add_argument("--max_minutes", type=float, default=None, help="training + validation wall-time budget")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--smoke", type=int, default=0, help="use only the first N lines of each split (0 = all)")
    parser.add_argument("--out", type=Path, default=None, help="write the run's JSON record here")
    return parser.parse_args(argv)


# --- data.py: a dictionary grown over train, valid, test in that order; one <eos> per line ---------------------------
class Corpus:
    def __init__(self, path: Path, max_lines: int = 0):
        self.word2idx, self.idx2word = {}, []
        self.train, self.valid, self.test = (self.tokenize(path / f"ptb.{s}.txt", max_lines) for s in SPLITS)

    def tokenize(self, path: Path, max_lines: int) -> torch.Tensor:
        lines = path.read_text(encoding="utf8").splitlines()
        lines = lines[:max_lines] if max_lines else lines
        ids = []
        for line in lines:
            for word in line.split() + ["<eos>"]:
                if word not in self.word2idx:
                    self.word2idx[word] = len(self.idx2word)
                    self.idx2word.append(word)
                ids.append(self.word2idx[word])
        return torch.tensor(ids, dtype=torch.int64)  # (n_tokens,)


# --- model.py: RNNModel with an LSTM -----------------------------------------------------------------------------------
class RNNModel(nn.Module):
    """Encoder -> dropout -> nn.LSTM (with its own inter-layer dropout) -> dropout -> decoder -> log_softmax."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:  # Press & Wolf 2016, Inan et al. 2016: the softmax reuses the input embedding
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        initrange = 0.1  # the original's init; the LSTM keeps PyTorch's default uniform(-1/sqrt(nhid), 1/sqrt(nhid))
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))  # (seq, batch, ninp)
        output, hidden = self.rnn(emb, hidden)  # (seq, batch, nhid); hidden: 2 x (nlayers, batch, nhid)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)  # (seq * batch, ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))


# --- main.py ------------------------------------------------------------------------------------------------------
def batchify(data, bsz):
    """(n_tokens,) -> (n_tokens // bsz, bsz): bsz independent columns, the remainder trimmed off."""
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def get_batch(source, i, bptt):
    """Rows i..i+seq_len of the columns and the same rows shifted by one: (seq_len, bsz), (seq_len * bsz,)."""
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


def repackage_hidden(h):
    """Detach the hidden state from its history, so backprop stops at the start of the batch (truncated BPTT)."""
    return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)


def anneal(lr, val_loss, best_val_loss):
    """The original's schedule: a new best keeps lr (and is saved); otherwise lr /= 4. Returns (improved, lr)."""
    improved = best_val_loss is None or val_loss < best_val_loss
    return improved, (lr if improved else lr / 4.0)


def evaluate(model, data_source, bptt):
    """Mean per-token NLL over (len - 1) rows x EVAL_BATCH_SIZE columns, hidden state carried across chunks."""
    model.eval()  # no dropout
    total_loss = 0.0
    hidden = model.init_hidden(EVAL_BATCH_SIZE)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i, bptt)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * F.nll_loss(output, targets).item()  # weight each chunk by its length
    return total_loss / (len(data_source) - 1)


def train_step(model, data, targets, hidden, lr, clip):
    """One batch of main.py's `train()`: forward, NLL, backward, clipping, the SGD update by hand. Returns the loss
    (a tensor: reading it is the caller's choice) and the new hidden state (bench/speed.py times this step)."""
    hidden = repackage_hidden(hidden)
    model.zero_grad()
    output, hidden = model(data, hidden)  # (bptt * batch, ntoken)
    loss = F.nll_loss(output, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # prevents exploding gradients in LSTMs
    for p in model.parameters():  # plain SGD, by hand as in the original
        p.data.add_(p.grad, alpha=-lr)
    return loss, hidden


def train_epoch(model, train_data, args, lr, epoch, deadline):
    """One pass over the training columns, stopped early once time.monotonic() passes the deadline.
    Returns (stopped_early, tokens trained on, seconds spent)."""
    model.train()  # dropout on
    total_loss, tokens, start_time, log_start = 0.0, 0, time.monotonic(), time.monotonic()
    hidden = model.init_hidden(args.batch_size)
    n_batches = len(train_data) // args.bptt
    for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
        data, targets = get_batch(train_data, i, args.bptt)  # (bptt, batch), (bptt * batch,)
        loss, hidden = train_step(model, data, targets, hidden, lr, args.clip)
        total_loss += loss.item()
        tokens += data.numel()
        if batch % args.log_interval == 0 and batch > 0:
            cur_loss, elapsed = total_loss / args.log_interval, time.monotonic() - log_start
            print(
                f"| epoch {epoch:3d} | {batch:5d}/{n_batches:5d} batches | lr {lr:02.2f} | "
                f"ms/batch {elapsed * 1000 / args.log_interval:5.2f} | loss {cur_loss:5.2f} | ppl {math.exp(cur_loss):8.2f}"
            )
            total_loss, log_start = 0.0, time.monotonic()
        if deadline is not None and time.monotonic() > deadline:
            print(f"| epoch {epoch:3d} | time budget reached after {batch + 1} of {n_batches} batches")
            return True, tokens, time.monotonic() - start_time
    return False, tokens, time.monotonic() - start_time


def cpu_name():
    name = platform.processor()
    if not name and Path("/proc/cpuinfo").exists():
        lines = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else ""
    return name or platform.machine()


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    corpus = Corpus(args.data, args.smoke)
    train_data = batchify(corpus.train, args.batch_size)  # (n_train // 20, 20)
    val_data = batchify(corpus.valid, EVAL_BATCH_SIZE)  # (n_valid // 10, 10)
    test_data = batchify(corpus.test, EVAL_BATCH_SIZE)  # (n_test // 10, 10)
    ntokens = len(corpus.idx2word)
    model = RNNModel(ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied)
    print(f"vocab size {ntokens} | train tokens {len(corpus.train)} | threads {torch.get_num_threads()}")

    lr, best_val_loss, curve = args.lr, None, []
    train_tokens, train_step_s = 0, 0.0  # training steps only (no validation), for tokens/s
    start = time.monotonic()  # the budget covers training + validation only
    deadline = start + 60 * args.max_minutes if args.max_minutes is not None else None
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.monotonic()
        out_of_time, tokens, seconds = train_epoch(model, train_data, args, lr, epoch, deadline)
        train_tokens, train_step_s = train_tokens + tokens, train_step_s + seconds
        val_loss = evaluate(model, val_data, args.bptt)
        curve.append(
            {"epoch": epoch, "wall_s": time.monotonic() - start, "valid_loss": val_loss,
             "valid_perplexity": math.exp(val_loss), "lr": lr}
        )  # fmt: skip
        print("-" * 89)
        print(
            f"| end of epoch {epoch:3d} | time: {time.monotonic() - epoch_start:5.2f}s | valid loss {val_loss:5.2f} | "
            f"valid ppl {math.exp(val_loss):8.2f}"
        )
        print("-" * 89)
        improved, lr = anneal(lr, val_loss, best_val_loss)
        if improved:  # save atomically: a run killed mid-write never leaves a truncated best model
            tmp = args.save.with_name(args.save.name + ".tmp")
            args.save.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, args.save)
            best_val_loss = val_loss
        if out_of_time:
            break
    train_wall_s = time.monotonic() - start

    # The best model by validation loss, not the last one, is tested.
    model.load_state_dict(torch.load(args.save, weights_only=True))
    test_loss = evaluate(model, test_data, args.bptt)
    print("=" * 89)
    print(f"| End of training | test loss {test_loss:5.2f} | test ppl {math.exp(test_loss):8.2f}")
    print("=" * 89)

    results = {
        "recipe": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "vocab_size": ntokens,
        "curve": curve,
        "best_valid_perplexity": math.exp(best_val_loss),
        "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss),
        "epochs_completed": len(curve),
        "stopped_by_budget": out_of_time,
        "train_wall_s": train_wall_s,
        "train_tokens": train_tokens,
        "train_tokens_per_s": train_tokens / train_step_s,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
