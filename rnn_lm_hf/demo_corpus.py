"""A built-in synthetic corpus for the demo: English-like sentences with long-distance subject-verb agreement.

A small probabilistic grammar (about 200 words) writes lower-case, space-separated sentences ending in " .", e.g.
"the writer of the books is famous ." or "the keys to the cabinet that the doctor likes are heavy .". The head noun
and the main verb always agree in number; prepositional phrases and relative clauses put nouns of either number
(attractors) between them. A small LSTM learns it in a few minutes on 2 CPU cores, and `agreement_accuracy` then
measures whether it tracks the head noun rather than the nearest one (Linzen et al. 2016, "Assessing the ability of
LSTMs to learn syntax-sensitive dependencies", https://arxiv.org/abs/1611.01368).
"""

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .evaluation import continuation_log_probs


# (singular, plural) pairs. Animate nouns can do things; inanimate ones only be, have and belong.
ANIMATE_NOUNS = [
    ("writer", "writers"), ("author", "authors"), ("teacher", "teachers"), ("student", "students"),
    ("doctor", "doctors"), ("farmer", "farmers"), ("manager", "managers"), ("pilot", "pilots"),
    ("singer", "singers"), ("lawyer", "lawyers"), ("child", "children"), ("woman", "women"), ("man", "men"),
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("friend", "friends"), ("neighbor", "neighbors"),
    ("officer", "officers"), ("painter", "painters"),
]  # fmt: skip
INANIMATE_NOUNS = [
    ("book", "books"), ("key", "keys"), ("cabinet", "cabinets"), ("house", "houses"), ("car", "cars"),
    ("table", "tables"), ("window", "windows"), ("door", "doors"), ("letter", "letters"), ("picture", "pictures"),
    ("report", "reports"), ("garden", "gardens"), ("bridge", "bridges"), ("box", "boxes"), ("road", "roads"),
    ("lamp", "lamps"), ("chair", "chairs"), ("song", "songs"), ("river", "rivers"), ("city", "cities"),
]  # fmt: skip
# (singular, plural) verb forms.
COPULAS = [("is", "are"), ("was", "were")]
HAVE = ("has", "have")
BELONG = ("belongs", "belong")
INTRANSITIVE_VERBS = [
    ("sleeps", "sleep"), ("laughs", "laugh"), ("smiles", "smile"), ("waits", "wait"),
    ("runs", "run"), ("sings", "sing"), ("arrives", "arrive"), ("works", "work"),
]  # fmt: skip
# Animate subject, any object.
TRANSITIVE_VERBS = [
    ("likes", "like"), ("sees", "see"), ("finds", "find"), ("remembers", "remember"),
    ("admires", "admire"), ("carries", "carry"), ("buys", "buy"), ("describes", "describe"),
]  # fmt: skip
SHARED_ADJECTIVES = ["old", "new", "small", "large", "famous", "beautiful", "strange", "quiet"]
ANIMATE_ADJECTIVES = ["happy", "tired", "busy", "clever", "angry"]
INANIMATE_ADJECTIVES = ["red", "broken", "heavy", "expensive", "empty"]
SINGULAR_DETERMINERS = ["the", "the", "the", "a", "this", "that", "every"]  # repeats weight "the"
PLURAL_DETERMINERS = ["the", "the", "the", "some", "these", "those", "many"]
PREPOSITIONS = ["of", "near", "behind", "beside", "with", "to", "from", "under", "above", "on"]
ADJUNCTS = ["today", "again", "here", "in the morning", "in the evening", "at night"]

# Probabilities of the optional parts of a subject noun phrase.
P_ADJECTIVE, P_PP, P_SECOND_PP, P_RELATIVE_CLAUSE, P_ADJUNCT = 0.2, 0.45, 0.15, 0.2, 0.2

SINGULAR_VERBS = {s for s, _ in [*COPULAS, HAVE, BELONG, *INTRANSITIVE_VERBS, *TRANSITIVE_VERBS]}
PLURAL_VERBS = {p for _, p in [*COPULAS, HAVE, BELONG, *INTRANSITIVE_VERBS, *TRANSITIVE_VERBS]}
SINGULAR_NOUNS = {s for s, _ in ANIMATE_NOUNS + INANIMATE_NOUNS}
PLURAL_NOUNS = {p for _, p in ANIMATE_NOUNS + INANIMATE_NOUNS}


@dataclass
class DemoSentence:
    """A generated sentence with its agreement annotated: `words[subject_index]` is the head noun of the subject and
    `words[verb_index]` the main verb, both singular or both plural."""

    text: str
    subject_index: int
    verb_index: int
    plural: bool


def generate_sentences(num_sentences: int, seed: int = 0) -> list[DemoSentence]:
    """`num_sentences` annotated sentences; the same seed always gives the same sentences."""
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(num_sentences)]


def generate_corpus(num_sentences: int, seed: int = 0) -> list[str]:
    """`num_sentences` sentences, lower case, space-separated tokens including the final "."."""
    return [sentence.text for sentence in generate_sentences(num_sentences, seed)]


def write_demo_corpus(
    directory: str | os.PathLike,
    num_train: int = 20000,
    num_validation: int = 1000,
    num_test: int = 1000,
    seed: int = 0,
) -> dict[str, str]:
    """Write `train.txt`, `validation.txt` and `test.txt` (one sentence per line) and return {split: path}.

    One random stream is cut into the three splits, so the files depend only on the counts and the seed.
    """
    sentences = generate_corpus(num_train + num_validation + num_test, seed)
    bounds = {"train": (0, num_train), "validation": (num_train, num_train + num_validation)}
    bounds["test"] = (num_train + num_validation, len(sentences))
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for split, (start, end) in bounds.items():
        paths[split] = os.path.join(os.fspath(directory), f"{split}.txt")
        with open(paths[split], "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in sentences[start:end])
    return paths


def demo_vocabulary() -> list[str]:
    """Every word the grammar can produce (sorted), e.g. for `word_tokenizer_from_vocab`."""
    words = {"that", "an", "."}
    for pair in [*ANIMATE_NOUNS, *INANIMATE_NOUNS, *COPULAS, HAVE, BELONG, *INTRANSITIVE_VERBS, *TRANSITIVE_VERBS]:
        words.update(pair)
    for group in [SHARED_ADJECTIVES, ANIMATE_ADJECTIVES, INANIMATE_ADJECTIVES, SINGULAR_DETERMINERS]:
        words.update(group)
    for group in [PLURAL_DETERMINERS, PREPOSITIONS, ADJUNCTS]:
        words.update(word for phrase in group for word in phrase.split())
    return sorted(words)


def agreement_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """`n` (prefix, correct_verb, wrong_verb) triples for a targeted agreement test (Linzen et al. 2016).

    Each prefix is a subject noun phrase with at least one attractor of the opposite number between the head noun
    and the verb: a prepositional phrase ("the writer of the books") or an object relative clause ("the keys that the
    doctor likes"). The verb pair is chosen among those the head noun can take.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        plural, animate = rng.random() < 0.5, rng.random() < 0.5
        words = _noun_phrase(rng, plural, animate)
        if rng.random() < 0.5:
            words += [rng.choice(PREPOSITIONS), *_noun_phrase(rng, not plural, rng.random() < 0.5)]
        else:
            words += ["that", *_noun_phrase(rng, not plural, True), _agree(rng.choice(TRANSITIVE_VERBS), not plural)]
        verb = rng.choice(_predicate_verbs(animate))
        pairs.append((" ".join(words), _agree(verb, plural), _agree(verb, not plural)))
    return pairs


def agreement_accuracy(
    model: torch.nn.Module,
    tokenizer,
    pairs: Sequence[tuple[str, str, str]],
    batch_size: int = 64,
    prepend_eos: bool = True,
    context: str = "",
) -> float:
    """Share of `pairs` where `model` gives the correct verb a higher log-probability than the wrong one after the
    prefix (multi-token verbs: summed over their tokens), scored by `evaluation.continuation_log_probs`.

    `model` is any causal LM called as `model(input_ids=..., attention_mask=...)` returning `.logits` of shape
    (batch, seq_len, vocab_size). With `prepend_eos`, the prefix follows `<eos>`, as every sentence does in a
    training stream built with `add_eos=True`. `context` (e.g. "the bird sings . <eos>") is read, unscored, before
    every prefix: a model trained with its state carried across lines scores far better after one sentence than
    from a zero state (docs/analysis.md). `minimal_pairs.score_pairs` does the same for jsonl pairs.
    """
    if not pairs:
        raise ValueError("agreement_accuracy needs at least one (prefix, correct_verb, wrong_verb) pair.")
    items = [
        (f"{context} {prefix}" if context else prefix, verb)
        for prefix, correct, wrong in pairs
        for verb in (correct, wrong)
    ]
    scores = continuation_log_probs(model, tokenizer, items, batch_size, prepend_eos)
    return sum(scores[2 * i] > scores[2 * i + 1] for i in range(len(pairs))) / len(pairs)


def _agree(verb: tuple[str, str], plural: bool) -> str:
    return verb[1] if plural else verb[0]


def _noun(rng: random.Random, plural: bool, animate: bool) -> str:
    return _agree(rng.choice(ANIMATE_NOUNS if animate else INANIMATE_NOUNS), plural)


def _noun_phrase(rng: random.Random, plural: bool, animate: bool) -> list[str]:
    """determiner (adjective) noun."""
    words = [rng.choice(PLURAL_DETERMINERS if plural else SINGULAR_DETERMINERS)]
    if rng.random() < P_ADJECTIVE:
        words.append(rng.choice(SHARED_ADJECTIVES + (ANIMATE_ADJECTIVES if animate else INANIMATE_ADJECTIVES)))
    words.append(_noun(rng, plural, animate))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def _predicate_verbs(animate: bool) -> list[tuple[str, str]]:
    return [*COPULAS, HAVE] + ([*INTRANSITIVE_VERBS, *TRANSITIVE_VERBS] if animate else [BELONG])


def _sentence(rng: random.Random) -> DemoSentence:
    plural, animate = rng.random() < 0.5, rng.random() < 0.5
    words = _noun_phrase(rng, plural, animate)
    subject_index = len(words) - 1
    # Attractors: up to two prepositional phrases, or a relative clause, each noun of random number.
    if rng.random() < P_PP:
        words += [rng.choice(PREPOSITIONS), *_noun_phrase(rng, rng.random() < 0.5, rng.random() < 0.5)]
        if rng.random() < P_SECOND_PP:
            words += [rng.choice(PREPOSITIONS), *_noun_phrase(rng, rng.random() < 0.5, rng.random() < 0.5)]
    elif rng.random() < P_RELATIVE_CLAUSE:
        verb = rng.choice(TRANSITIVE_VERBS)
        if rng.random() < 0.5:  # object relative: "that the doctors like", the verb agrees with "doctors"
            other_plural = rng.random() < 0.5
            words += ["that", *_noun_phrase(rng, other_plural, True), _agree(verb, other_plural)]
        elif animate:  # subject relative: "that likes the dogs", the verb agrees with the head
            words += ["that", _agree(verb, plural), *_noun_phrase(rng, rng.random() < 0.5, rng.random() < 0.5)]
    verb_index = len(words)
    words += _predicate(rng, plural, animate)
    if rng.random() < P_ADJUNCT:
        words += rng.choice(ADJUNCTS).split()
    return DemoSentence(" ".join([*words, "."]), subject_index, verb_index, plural)


def _predicate(rng: random.Random, plural: bool, animate: bool) -> list[str]:
    """The main verb (agreeing with the subject) and its complement."""
    verb = rng.choice(_predicate_verbs(animate))
    if verb in COPULAS:
        adjectives = SHARED_ADJECTIVES + (ANIMATE_ADJECTIVES if animate else INANIMATE_ADJECTIVES)
        return [_agree(verb, plural), rng.choice(adjectives)]
    if verb == BELONG:
        return [_agree(verb, plural), "to", *_noun_phrase(rng, rng.random() < 0.5, True)]
    if verb in INTRANSITIVE_VERBS:
        return [_agree(verb, plural)]
    # has/have and transitive verbs take an object, sometimes with its own prepositional phrase.
    obj = _noun_phrase(rng, rng.random() < 0.5, rng.random() < 0.5)
    if rng.random() < 0.2:
        obj += [rng.choice(PREPOSITIONS), *_noun_phrase(rng, rng.random() < 0.5, rng.random() < 0.5)]
    return [_agree(verb, plural), *obj]
