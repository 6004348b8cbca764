"""Token-weighted perplexity from summed negative log-likelihoods: exp(total NLL / total predicted tokens).

Loaded offline by path: `evaluate.load(".../rnn_lm_hf/metrics/perplexity")`.
"""

import math

import datasets
import evaluate


_CITATION = """\
@article{jelinek1977perplexity,
  title   = {Perplexity---a measure of the difficulty of speech recognition tasks},
  author  = {Jelinek, Fred and Mercer, Robert L. and Bahl, Lalit R. and Baker, James K.},
  journal = {The Journal of the Acoustical Society of America},
  volume  = {62},
  number  = {S1},
  pages   = {S63--S63},
  year    = {1977}
}
"""

_DESCRIPTION = """\
Perplexity of a language model over a corpus, PPL = exp(sum of token NLLs / number of predicted tokens), from chunks
(batches, segments or documents) that each report their summed negative log-likelihood in nats and their number of
predicted tokens. Every token weighs the same: this is the corpus perplexity reported for PTB/WikiText, unlike the
mean of per-chunk perplexities or exp of the mean per-batch loss, which over-weight short chunks. Unlike the Hub
`perplexity` metric, it loads no model: the caller runs the model and passes the sums.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[float]`): summed negative log-likelihood (nats) of the predicted tokens of each chunk.
    references (`list[int]`): number of predicted tokens in each chunk (non-negative; at least one overall).
Returns:
    perplexity (`float`): exp(total NLL / total tokens).
    loss (`float`): mean NLL per token in nats (the cross-entropy), i.e. log(perplexity).
    num_tokens (`int`): total predicted tokens.
Examples:
    >>> metric = evaluate.load("rnn_lm_hf/metrics/perplexity")
    >>> metric.compute(predictions=[6.0, 2.0], references=[3, 1])
    {'perplexity': 7.38905609893065, 'loss': 2.0, 'num_tokens': 4}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Perplexity"],
        )

    def _compute(self, predictions, references):
        if any(count < 0 for count in references):
            raise ValueError("references are token counts and must be >= 0.")
        num_tokens = int(sum(references))
        if num_tokens == 0:
            raise ValueError("No predicted tokens (references sum to 0): perplexity is undefined.")
        # math.fsum: exact summation, so millions of chunk sums lose no precision.
        loss = math.fsum(predictions) / num_tokens
        return {"perplexity": math.exp(loss), "loss": loss, "num_tokens": num_tokens}
