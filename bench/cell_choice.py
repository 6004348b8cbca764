"""Which parallel-in-time cell (issue 25): one layer's training pass (forward + backward) of minGRU, minLSTM and a
QRNN, all three through the package's `linear_scan`, beside `nn.LSTM`, interleaved, one thread.

minLSTM (Feng et al. 2024): normalised forget and input gates, h_t = f'_t h_{t-1} + i'_t g(h~_t). QRNN (Bradbury et
al. 2017), window 2, f-pooling with an output gate: c_t = f_t c_{t-1} + (1 - f_t) tanh(z_t), h_t = o_t c_t.

    python bench/cell_choice.py                    # widths 256 and 650, batch 20, bptt 70
"""

import argparse
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

import torch  # noqa: E402
from torch import nn  # noqa: E402

from rnn_lm_hf.modeling_rnn_lm import MinGRU, linear_scan  # noqa: E402


# minGRU's own forms (relu, not where / clamp, whose backward passes are slower on a CPU), so the three cells compare
# as equally tuned code.
def g(x: torch.Tensor) -> torch.Tensor:
    return x.relu() + torch.sigmoid(-(-x).relu())  # x + 0.5 for x >= 0, sigmoid(x) below


def floor(log_a: torch.Tensor) -> torch.Tensor:
    return (log_a + 7.5).relu() - 7.5  # max(log_a, -7.5): a block's decay within fp32's range


def layers(width: int) -> dict[str, tuple[nn.Module, callable]]:
    mingru, minlstm, qrnn = MinGRU(width, width), nn.Linear(width, 3 * width), nn.Linear(2 * width, 3 * width)
    lstm = nn.LSTM(width, width, batch_first=True)

    def run_minlstm(x):
        forget, update, candidate = minlstm(x).chunk(3, -1)
        log_f, log_i = nn.functional.logsigmoid(forget), nn.functional.logsigmoid(update)
        norm = torch.logaddexp(log_f, log_i)
        return linear_scan(floor(log_f - norm), (log_i - norm).exp() * g(candidate), None, 8)

    def run_qrnn(x):
        previous = nn.functional.pad(x, (0, 0, 1, 0))[:, :-1]
        z, forget, output = qrnn(torch.cat([x, previous], -1)).chunk(3, -1)
        log_f = floor(nn.functional.logsigmoid(forget))
        return torch.sigmoid(output) * linear_scan(log_f, torch.sigmoid(-forget) * torch.tanh(z), None, 8)

    return {
        "minGRU": (mingru, lambda x: mingru(x)[0]),
        "minLSTM": (minlstm, run_minlstm),
        "QRNN": (qrnn, run_qrnn),
        "LSTM": (lstm, lambda x: lstm(x)[0]),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 650])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for width in args.widths:
        x = torch.randn(args.batch, args.bptt, width, requires_grad=True)
        cells = layers(width)
        times = {name: [] for name in cells}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for name, (_, run) in cells.items():
                start = time.perf_counter()
                run(x).sum().backward()
                if repeat:
                    times[name].append(1e3 * (time.perf_counter() - start))
        results[width] = {
            name: {"ms": statistics.median(times[name]), "parameters": sum(p.numel() for p in module.parameters())}
            for name, (module, _) in cells.items()
        }
        for name, row in results[width].items():
            print(f"width {width}: {name:8s} {row['ms']:7.1f} ms  {row['parameters'] / 1e6:.2f}M parameters")
    return results


if __name__ == "__main__":
    main()
