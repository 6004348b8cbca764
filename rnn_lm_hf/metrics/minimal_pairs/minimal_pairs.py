"""Minimal-pair accuracy: the share of pairs whose good member gets the higher log-probability, overall and by group.

Loaded offline by path: `evaluate.load(".../rnn_lm_hf/metrics/minimal_pairs")`.
"""

from collections import defaultdict

import datasets
import evaluate


_CITATION = """\
@article{linzen2016assessing,
  title   = {Assessing the Ability of {LSTM}s to Learn Syntax-Sensitive Dependencies},
  author  = {Linzen, Tal and Dupoux, Emmanuel and Goldberg, Yoav},
  journal = {Transactions of the Association for Computational Linguistics},
  volume  = {4},
  pages   = {521--535},
  year    = {2016}
}
@inproceedings{marvin2018targeted,
  title     = {Targeted Syntactic Evaluation of Language Models},
  author    = {Marvin, Rebecca and Linzen, Tal},
  booktitle = {Proceedings of EMNLP},
  pages     = {1192--1202},
  year      = {2018}
}
"""

_DESCRIPTION = """\
Targeted syntactic evaluation of a language model on minimal pairs (Linzen et al. 2016; Marvin & Linzen 2018; BLiMP):
a pair counts as correct when the model gives its grammatical member a strictly higher log-probability than the
ungrammatical one (a tie is wrong). Like the package's perplexity metric it loads no model: the caller scores both
members (`rnn_lm_hf.minimal_pairs.score_pairs`) and passes the log-probabilities.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[float]`): log-probability of the good member of each pair (continuation or sentence).
    references (`list[float]`): log-probability of the bad member of each pair.
    groups (`list[str]`, *optional*): a label per pair (e.g. its number of attractors) to break the accuracy down by.
Returns:
    accuracy (`float`): share of pairs with log p(good) > log p(bad).
    num_pairs (`int`): number of pairs.
    accuracy_by_group (`dict[str, float]`): with `groups`, the accuracy of each label.
    count_by_group (`dict[str, int]`): with `groups`, the number of pairs of each label.
Examples:
    >>> metric = evaluate.load("rnn_lm_hf/metrics/minimal_pairs")
    >>> metric.compute(predictions=[-1.0, -3.0], references=[-2.0, -2.5], groups=["0", "1"])
    {'accuracy': 0.5, 'num_pairs': 2, 'accuracy_by_group': {'0': 1.0, '1': 0.0}, 'count_by_group': {'0': 1, '1': 1}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MinimalPairs(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://arxiv.org/abs/1808.09031", "https://arxiv.org/abs/1611.01368"],
        )

    def _compute(self, predictions, references, groups=None):
        if not predictions:
            raise ValueError("No pairs: minimal-pair accuracy is undefined.")
        correct = [good > bad for good, bad in zip(predictions, references)]
        result = {"accuracy": sum(correct) / len(correct), "num_pairs": len(correct)}
        if groups is not None:
            if len(groups) != len(correct):
                raise ValueError(f"groups has {len(groups)} labels for {len(correct)} pairs; pass one per pair.")
            hits = defaultdict(list)
            for group, right in zip(groups, correct):
                hits[str(group)].append(right)
            result["accuracy_by_group"] = {group: sum(h) / len(h) for group, h in sorted(hits.items())}
            result["count_by_group"] = {group: len(h) for group, h in sorted(hits.items())}
        return result
