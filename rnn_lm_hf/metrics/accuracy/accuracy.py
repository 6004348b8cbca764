"""Token (or example) accuracy over integer labels, skipping positions whose reference is the ignore index.

Loaded offline by path: `evaluate.load(".../rnn_lm_hf/metrics/accuracy")`.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """\
Accuracy = correct / counted, where positions whose reference equals `ignore_index` (-100: special tokens, padding
and the unlabelled sub-tokens of a word in token classification) are not counted. Inputs are flat lists of ints, or
lists of int sequences (e.g. (batch, seq_len) label arrays), which are flattened.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]` or `list[list[int]]`): predicted label ids.
    references (`list[int]` or `list[list[int]]`): gold label ids, same shape as `predictions`.
    ignore_index (`int`, *optional*, defaults to -100): reference value of positions to skip; None skips nothing.
Returns:
    accuracy (`float`): NaN when no position is left to count (0 would read as "all wrong").
    num_counted (`int`): positions counted.
Examples:
    >>> metric = evaluate.load("rnn_lm_hf/metrics/accuracy")
    >>> metric.compute(predictions=[1, 2, 0], references=[1, -100, 1])
    {'accuracy': 0.5, 'num_counted': 2}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            # Two accepted layouts: evaluate picks the one that matches the first batch.
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("int64")),
                        "references": datasets.Sequence(datasets.Value("int64")),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, ignore_index: int | None = -100):
        if len(predictions) and not np.isscalar(predictions[0]):
            for i, (pred, ref) in enumerate(zip(predictions, references)):
                if len(pred) != len(ref):
                    raise ValueError(f"row {i}: {len(pred)} predictions but {len(ref)} references")
            predictions = [p for row in predictions for p in row]
            references = [r for row in references for r in row]
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        keep = references != ignore_index if ignore_index is not None else np.ones_like(references, dtype=bool)
        counted = int(keep.sum())
        correct = int((predictions[keep] == references[keep]).sum())
        return {"accuracy": correct / counted if counted else float("nan"), "num_counted": counted}
