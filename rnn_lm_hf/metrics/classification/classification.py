"""Accuracy plus macro, micro and weighted precision/recall/F1 for single-label classification (integer labels).

Loaded offline by path: `evaluate.load(".../rnn_lm_hf/metrics/classification")`. Pure numpy; the numbers match
scikit-learn's `accuracy_score` and `precision_recall_fscore_support(..., zero_division=0)`.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """\
Accuracy and per-class precision/recall/F1 averaged three ways: macro (unweighted mean over classes, the usual
sentiment-benchmark F1), micro (pooled counts; equals accuracy when every class is listed) and weighted (mean
weighted by each class's gold count). A ratio with a zero denominator counts as 0 (scikit-learn `zero_division=0`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): gold class ids.
    labels (`list[int]`, *optional*): classes to average over. Defaults to the classes seen in either list; pass
        `range(num_labels)` so that a class missing from a small eval set still counts (with F1 0) in the macro mean.
    ignore_index (`int`, *optional*, defaults to -100): examples whose reference equals it are skipped.
Returns:
    accuracy, macro_precision, macro_recall, macro_f1, micro_f1, weighted_f1 and f1_class_<id> for each class
    (`float`).
Examples:
    >>> metric = evaluate.load("rnn_lm_hf/metrics/classification")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])["macro_f1"]
    0.6666666666666666
"""


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/model_evaluation.html#precision-recall-f-measure"
            ],
        )

    def _compute(self, predictions, references, labels=None, ignore_index: int | None = -100):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if ignore_index is not None:
            keep = references != ignore_index
            predictions, references = predictions[keep], references[keep]
        if references.size == 0:
            raise ValueError("no examples to score")
        labels = np.unique(np.concatenate([predictions, references])) if labels is None else np.asarray(labels)
        # (num_labels,) counts per class
        tp = np.array([np.sum((predictions == c) & (references == c)) for c in labels], dtype=np.float64)
        n_pred = np.array([np.sum(predictions == c) for c in labels], dtype=np.float64)
        n_true = np.array([np.sum(references == c) for c in labels], dtype=np.float64)
        precision, recall = _safe_div(tp, n_pred), _safe_div(tp, n_true)
        f1 = _safe_div(2 * tp, n_pred + n_true)  # == 2PR / (P + R), and 0 where undefined
        micro_f1 = _safe_div(2 * tp.sum(), n_pred.sum() + n_true.sum())
        return {
            "accuracy": float(np.mean(predictions == references)),
            "macro_precision": float(precision.mean()),
            "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean()),
            "micro_f1": float(micro_f1),
            "weighted_f1": float(_safe_div(np.sum(f1 * n_true), n_true.sum())),
            # Flat scalar keys (not a nested dict) so Trainer can log them as they are.
            **{f"f1_class_{int(c)}": float(v) for c, v in zip(labels, f1)},
        }
