"""Targeted syntactic evaluation: minimal pairs scored by a causal LM, and a template generator of agreement pairs.

A pair is one jsonl line, in one of two formats:
- `{"prefix": ..., "good": ..., "bad": ...}`: does the model give `good` a higher log-probability than `bad` after
  `prefix`? (Linzen et al. 2016, https://arxiv.org/abs/1611.01368; Gulordava et al. 2018.)
- `{"sentence_good": ..., "sentence_bad": ...}`: whole sentences, as in BLiMP (Warstadt et al. 2020) and Marvin &
  Linzen 2018 (https://arxiv.org/abs/1808.09031).
Any other field (distance, attractors, construction...) is kept and the accuracy is broken down by it.

The generator writes subject-verb agreement pairs across prepositional phrases and subject/object relative clauses,
whose nouns between the head and the verb have the other number with probability `p_attractor`; the two members of a
pair differ only in the verb.
"""

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from . import demo_corpus
from .evaluation import continuation_log_probs
from .tagging_data import read_jsonl


TEXT_FIELDS = ("prefix", "good", "bad", "sentence_good", "sentence_bad")
P_ADJECTIVE = 0.3  # before each noun between head and verb
CONSTRUCTIONS = ("simple", "prepositional_phrase", "subject_relative", "object_relative")


@dataclass(frozen=True)
class Lexicon:
    """The words a template may use; nouns and verbs are (singular, plural) pairs."""

    animate_nouns: tuple
    inanimate_nouns: tuple
    transitive_verbs: tuple  # animate subject, any object: used inside relative clauses
    main_verbs: tuple  # ((singular, plural), complement), complement one of "adjective", "object", "none"
    adjectives: tuple  # copula complements, and before the nouns between head and verb
    prepositions: tuple
    end: str  # appended to whole sentences ("." or "" for PTB, which has no punctuation)


DEMO_LEXICON = Lexicon(
    animate_nouns=tuple(demo_corpus.ANIMATE_NOUNS),
    inanimate_nouns=tuple(demo_corpus.INANIMATE_NOUNS),
    transitive_verbs=tuple(demo_corpus.TRANSITIVE_VERBS),
    main_verbs=(*((v, "adjective") for v in demo_corpus.COPULAS), (demo_corpus.HAVE, "object")),
    adjectives=tuple(demo_corpus.SHARED_ADJECTIVES),
    prepositions=tuple(demo_corpus.PREPOSITIONS),
    end=".",
)
# Every word below occurs at least 14 times in PTB's training split (Mikolov's version, lower case).
PTB_LEXICON = Lexicon(
    animate_nouns=tuple(
        (w, w + "s") for w in ("executive", "analyst", "investor", "manager", "official", "director", "trader")
    ),
    inanimate_nouns=(
        *((w, w + "s") for w in ("report", "plan", "price", "stock", "bank", "product", "program", "contract")),
        ("company", "companies"),
    ),
    transitive_verbs=(("owns", "own"), ("sells", "sell"), ("sees", "see"), ("buys", "buy"), ("supports", "support")),
    main_verbs=((("is", "are"), "adjective"), (("was", "were"), "adjective"), (("has", "have"), "object")),
    adjectives=("new", "large", "small", "strong", "big"),
    prepositions=("of", "near", "with", "from", "for", "about", "at", "on", "in"),
    end="",
)
LEXICONS = {"demo": DEMO_LEXICON, "ptb": PTB_LEXICON}


def generate_agreement_pairs(
    n: int, seed: int = 0, lexicon: str = "demo", kind: str = "prefix", p_attractor: float = 0.5
) -> list[dict]:
    """`n` subject-verb agreement pairs, cycling over `CONSTRUCTIONS` (the same seed gives the same pairs).

    Args:
        n (`int`): number of pairs.
        seed (`int`, *optional*, defaults to 0): random seed.
        lexicon (`str`, *optional*, defaults to `"demo"`): `"demo"` (the built-in corpus' words) or `"ptb"`.
        kind (`str`, *optional*, defaults to `"prefix"`): `"prefix"` ({"prefix","good","bad"}: the two verbs) or
            `"sentence"` ({"sentence_good","sentence_bad"}: whole sentences differing only in the verb).
        p_attractor (`float`, *optional*, defaults to 0.5): probability that a noun between head and verb has the
            other number (an attractor).
    Each pair also carries `construction`, `distance` (words from the head noun to the verb), `attractors`,
    `intervening_nouns` and `number` (of the head).
    """
    if lexicon not in LEXICONS:
        raise ValueError(f"Unknown lexicon {lexicon!r}; choose one of {', '.join(LEXICONS)}.")
    if kind not in ("prefix", "sentence"):
        raise ValueError(f"Unknown pair kind {kind!r}; choose 'prefix' or 'sentence'.")
    if not 0 <= p_attractor <= 1:
        raise ValueError(f"p_attractor must be in [0, 1], got {p_attractor}.")
    words, rng = LEXICONS[lexicon], random.Random(seed)
    return [_agreement_pair(rng, words, CONSTRUCTIONS[i % len(CONSTRUCTIONS)], kind, p_attractor) for i in range(n)]


def _agreement_pair(rng: random.Random, lex: Lexicon, construction: str, kind: str, p_attractor: float) -> dict:
    plural = rng.random() < 0.5
    animate = construction == "subject_relative" or rng.random() < 0.5  # a subject relative needs a doer
    words = ["the", _pick(rng, lex.animate_nouns if animate else lex.inanimate_nouns, plural)]
    head = len(words) - 1
    others = []  # number of each noun between head and verb

    def other_number() -> bool:
        others.append(plural != (rng.random() < p_attractor))
        return others[-1]

    if construction == "prepositional_phrase":
        for _ in range(rng.choice((1, 2))):
            words += [rng.choice(lex.prepositions), *_noun_phrase(rng, lex, _all_nouns(lex, rng), other_number())]
    elif construction == "subject_relative":  # "that likes the dogs": the embedded verb agrees with the head
        verb = _pick(rng, lex.transitive_verbs, plural)
        words += ["that", verb, *_noun_phrase(rng, lex, _all_nouns(lex, rng), other_number())]
    elif construction == "object_relative":  # "that the doctors like": it agrees with the embedded subject
        number = other_number()
        words += ["that", *_noun_phrase(rng, lex, lex.animate_nouns, number), _pick(rng, lex.transitive_verbs, number)]
    (verb, complement) = rng.choice(lex.main_verbs)
    good, bad = verb[plural], verb[not plural]
    fields = {
        "construction": construction,
        "distance": len(words) - head,
        "attractors": sum(n != plural for n in others),
        "intervening_nouns": len(others),
        "number": "plural" if plural else "singular",
    }
    prefix = " ".join(words)
    if kind == "prefix":
        return {"prefix": prefix, "good": good, "bad": bad, **fields}
    rest = [rng.choice(lex.adjectives)] if complement == "adjective" else []
    if complement == "object":
        rest = ["the", _pick(rng, _all_nouns(lex, rng), rng.random() < 0.5)]
    tail = " ".join([*rest, lex.end]).strip()
    sentences = {"sentence_good": f"{prefix} {good} {tail}".strip(), "sentence_bad": f"{prefix} {bad} {tail}".strip()}
    return {**sentences, **fields}


def _noun_phrase(rng: random.Random, lex: Lexicon, nouns: tuple, plural: bool) -> list[str]:
    """the (adjective) noun: the optional adjective varies the distance."""
    adjective = [rng.choice(lex.adjectives)] if rng.random() < P_ADJECTIVE else []
    return ["the", *adjective, _pick(rng, nouns, plural)]


def _all_nouns(lex: Lexicon, rng: random.Random) -> tuple:
    return lex.animate_nouns if rng.random() < 0.5 else lex.inanimate_nouns


def _pick(rng: random.Random, pairs: tuple, plural: bool) -> str:
    return rng.choice(pairs)[int(plural)]


def write_pairs(pairs: list[dict], path: str | Path) -> None:
    """One pair per jsonl line."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(pair) + "\n" for pair in pairs)


def read_pairs(path: str | Path) -> list[dict]:
    """Pairs from a jsonl file; every line needs `prefix`/`good`/`bad` or `sentence_good`/`sentence_bad`."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"No pairs file {str(path)!r}: pass a .jsonl file (`rnn-lm analyze pairs` writes one)."
        )
    pairs = []
    for number, pair in read_jsonl(path):
        check_pair(pair, f"{path}, line {number}")
        pairs.append(pair)
    if not pairs:
        raise ValueError(f"{path} holds no pairs.")
    return pairs


def check_pair(pair, where: str) -> None:
    if not isinstance(pair, dict):
        raise ValueError(f"{where}: a pair is a JSON object, got {type(pair).__name__}.")
    for keys in (("prefix", "good", "bad"), ("sentence_good", "sentence_bad")):
        if keys[0] in pair:
            if not all(isinstance(pair.get(key), str) and pair[key].strip() for key in keys):
                raise ValueError(f"{where}: {', '.join(keys)} must all be non-empty strings.")
            return
    raise ValueError(f"{where}: a pair needs the fields prefix, good, bad or sentence_good, sentence_bad.")


def score_pairs(
    model, tokenizer, pairs: list[dict], batch_size: int = 64, prepend_eos: bool = True, context: str = ""
) -> list[tuple]:
    """(log p(good), log p(bad)) per pair: of the continuation after the prefix, or of the whole sentence (summed over
    its tokens; with `prepend_eos` the first token is predicted from `<eos>`).

    `context` (e.g. "a sentence . <eos> another . <eos>") is read, unscored, before every pair: a model trained on
    a stream with its state carried across lines has rarely seen a sentence start from a zero state.
    """
    items = []
    for number, pair in enumerate(pairs):
        check_pair(pair, f"pair {number}")
        if "prefix" in pair:
            prefix = f"{context} {pair['prefix']}" if context else pair["prefix"]
            items += [(prefix, pair["good"]), (prefix, pair["bad"])]
        else:
            items += [(context, pair["sentence_good"]), (context, pair["sentence_bad"])]
    scores = continuation_log_probs(model, tokenizer, items, batch_size, prepend_eos)
    return list(zip(scores[0::2], scores[1::2]))


def summarize(pairs: list[dict], scores: list[tuple], by: list[str] | None = None) -> dict:
    """Accuracy (log p(good) > log p(bad); ties count as wrong) overall and per value of each field in `by` (default:
    every field besides the texts whose values are strings, numbers or booleans)."""
    correct = [good > bad for good, bad in scores]
    if by is None:
        by = sorted({k for p in pairs for k, v in p.items() if k not in TEXT_FIELDS and isinstance(v, str | int)})
    breakdown = {}
    for field in by:
        groups = defaultdict(list)
        for pair, right in zip(pairs, correct):
            if field in pair:
                groups[pair[field]].append(right)
        breakdown[field] = {
            str(value): {"accuracy": sum(hits) / len(hits), "count": len(hits)}
            for value, hits in sorted(groups.items(), key=lambda item: (str(type(item[0])), item[0]))
        }
    return {"accuracy": sum(correct) / len(correct), "num_pairs": len(correct), "by": breakdown}
