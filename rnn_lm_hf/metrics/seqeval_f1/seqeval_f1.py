"""Entity-level precision, recall and F1 with seqeval semantics (IOB1, IOB2, BIOES), plus token accuracy.

Loaded offline by path: `evaluate.load(".../rnn_lm_hf/metrics/seqeval_f1")`. The output has the shape of the Hub
`seqeval` metric, so run_ner-style `compute_metrics` code works unchanged.
"""

import datasets
import evaluate
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, IOBES, Entities


_CITATION = """\
@inproceedings{ramshaw-marcus-1995-text,
  title = "Text Chunking using Transformation-Based Learning",
  author = "Ramshaw, Lance and Marcus, Mitch",
  booktitle = "Third Workshop on Very Large Corpora",
  year = "1995",
}
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  author={Hiroki Nakayama},
  year={2018},
  url={https://github.com/chakki-works/seqeval},
}
"""

_DESCRIPTION = """\
Entity (chunk) level precision, recall and F1 as computed by the CoNLL `conlleval` script and `seqeval`, with
per-entity-type scores and token accuracy. Entities are extracted with `seqeval`:

- `scheme=None` (default): conlleval chunking (seqeval's default, non-strict mode). Any `I-X` that follows `O` or a
  different type opens a chunk, so IOB1 and sloppy IOB2 predictions are read the way conlleval reads them.
- `scheme="IOB2"` or `"BIOES"`/`"IOBES"`: seqeval strict mode. Only well-formed chunks count (an IOB2 chunk must open
  with `B-`, a BIOES chunk must be `S-X` or `B-X (I-X)* E-X`), and tags outside the scheme raise `ValueError`.
- `scheme="IOB1"`: tags are rewritten to IOB2 (an `I-X` after `O` or another type opens a chunk) and scored strictly.
  This equals conlleval chunking on I/B/O tags. seqeval's own strict IOB1 is not used: it reads `B-PER I-PER` as one
  single-token PER (seqeval 1.2.2).

Tags must be `O` or `<prefix>-<TYPE>` with prefix B, I, E or S (`<TYPE>-<prefix>` with `suffix=True`). POS tags have no
chunks: score them with the `accuracy` metric instead.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): predicted tags, one list per sentence, with the `-100` positions already removed.
    references (`list[list[str]]`): gold tags, aligned with `predictions`.
    scheme (`str`, *optional*): "IOB1", "IOB2", "BIOES" (alias "IOBES") or None for conlleval chunking.
    mode (`str`, *optional*): "strict" or "default". None means "strict" when a scheme is given, else "default".
    suffix (`bool`, defaults to `False`): tags are written `PER-B` instead of `B-PER`.
Returns:
    `overall_precision`, `overall_recall`, `overall_f1` (micro-averaged over entities), `overall_accuracy` (tokens),
    and for each entity type a dict with `precision`, `recall`, `f1` and `number` (gold entities of that type).
Examples:
    >>> metric = evaluate.load("rnn_lm_hf/metrics/seqeval_f1")
    >>> metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""

_STRICT_SCHEMES = {"IOB2": IOB2, "IOBES": IOBES, "BIOES": IOBES}
_PREFIXES = ("B", "I", "E", "S")


def _split_tag(tag: str, suffix: bool) -> tuple[str, str]:
    """`B-PER` -> (`B`, `PER`); `O` -> (`O`, ``). Raises ValueError for tags that are not chunk tags."""
    if tag == "O":
        return "O", ""
    prefix, sep, entity_type = (tag[-1], tag[-2:-1], tag[:-2]) if suffix else (tag[0], tag[1:2], tag[2:])
    if prefix not in _PREFIXES or sep != "-" or not entity_type:
        form = "<TYPE>-<B|I|E|S>" if suffix else "<B|I|E|S>-<TYPE>"
        raise ValueError(
            f"tag {tag!r} is not 'O' or {form}: entity F1 needs chunk tags (score POS tags with the accuracy metric)"
        )
    return prefix, entity_type


def _iob1_to_iob2(tags: list[str], suffix: bool) -> list[str]:
    # IOB1 uses B- only between two adjacent chunks of one type; an I-X after O or another type also opens a chunk.
    out, prev_type = [], ""
    for tag in tags:
        prefix, entity_type = _split_tag(tag, suffix)
        if prefix not in ("B", "I", "O"):
            raise ValueError(f"tag {tag!r} is not valid in scheme IOB1 (allowed prefixes: B, I, O)")
        if prefix == "I" and entity_type != prev_type:
            tag = f"{entity_type}-B" if suffix else f"B-{entity_type}"
        out.append(tag)
        prev_type = entity_type
    return out


def _entities(sequences: list[list[str]], scheme: str | None, strict: bool, suffix: bool) -> set[tuple]:
    """Set of (sentence, type, start, end) chunks."""
    if not strict:
        return {(i, *chunk) for i, seq in enumerate(sequences) for chunk in get_entities(list(seq), suffix=suffix)}
    try:
        found = Entities([list(seq) for seq in sequences], _STRICT_SCHEMES[scheme], suffix=suffix).entities
    except ValueError as err:  # seqeval: "Invalid token is found: S-PER. Allowed prefixes are: I|O|B."
        raise ValueError(f"scheme {scheme}: {err}") from None
    return {(e.sent_id, e.tag, e.start, e.end) for sent in found for e in sent}


def _scores(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    # Undefined ratios (no predicted or no gold entity) count as 0, like seqeval's zero_division=0.
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0  # == 2PR / (P + R)
    return {"precision": precision, "recall": recall, "f1": f1}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SeqevalF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://github.com/chakki-works/seqeval", "https://www.clips.uantwerpen.be/conll2000/"],
        )

    def _compute(self, predictions, references, scheme: str | None = None, mode: str | None = None, suffix=False):
        scheme = scheme.upper() if scheme else None
        if scheme not in (None, "IOB1", *_STRICT_SCHEMES):
            raise ValueError(f"unknown scheme {scheme!r}; use 'IOB1', 'IOB2', 'BIOES' (alias 'IOBES') or None")
        if mode not in (None, "strict", "default"):
            raise ValueError(f"unknown mode {mode!r}; use 'strict', 'default' or None")
        if mode == "strict" and scheme is None:
            raise ValueError("mode='strict' needs a scheme ('IOB1', 'IOB2' or 'BIOES')")
        strict = scheme is not None and mode != "default"
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predicted sentences but {len(references)} reference sentences")
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            if len(pred) != len(ref):
                raise ValueError(f"sentence {i}: {len(pred)} predicted tags but {len(ref)} reference tags")
            for tag in (*pred, *ref):
                _split_tag(tag, suffix)  # reject non-chunk tags (e.g. POS) in every mode
        # Token accuracy on the tags as given, before any IOB1 rewrite.
        n_tokens = sum(len(ref) for ref in references)
        n_equal = sum(p == r for pred, ref in zip(predictions, references) for p, r in zip(pred, ref))
        if strict and scheme == "IOB1":
            predictions = [_iob1_to_iob2(seq, suffix) for seq in predictions]
            references = [_iob1_to_iob2(seq, suffix) for seq in references]
            scheme = "IOB2"

        pred_entities = _entities(predictions, scheme, strict, suffix)
        true_entities = _entities(references, scheme, strict, suffix)
        correct = pred_entities & true_entities
        results = {}
        for entity_type in sorted({e[1] for e in pred_entities | true_entities}):
            n_true = sum(e[1] == entity_type for e in true_entities)
            counts = (sum(e[1] == entity_type for e in correct), sum(e[1] == entity_type for e in pred_entities))
            results[entity_type] = {**_scores(*counts, n_true), "number": n_true}
        overall = _scores(len(correct), len(pred_entities), len(true_entities))
        results.update({f"overall_{name}": value for name, value in overall.items()})
        results["overall_accuracy"] = n_equal / n_tokens if n_tokens else 0.0
        return results
