"""Deterministic synthetic memory tasks for tests, demos and benchmarks (seeded numpy; offline).

- `make_corpus`: random documents of readable "facts", of words from a list, or of token ids.
- `make_needle_task`: documents plus questions whose answer is stated in exactly one document
  (hops=1) or needs two chained documents (hops=2); queries carry `reference_ids` and `answers`,
  so a model can be trained to return the document ids (docs/msa.md §5-§6) and routing recall
  can be measured; optionally restricted to a set of persons (a split by entity) and with hard
  negatives (documents whose key differs from a needle's in one part).
- `synthetic_token_corpus`: a stream of token-id documents of a given total size, for
  memory-scale benchmarks, never held in memory all at once.

The same arguments always give the same output. Document and query ids are "0", "1", ...
Length ranges are inclusive (low, high) pairs.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from msa_jax.data.corpus import Document
from msa_jax.data.queries import Query
from msa_jax.errors import ConfigError

ADJECTIVES = ("old", "new", "secret", "favourite", "lucky", "hidden", "first", "second", "spare",
              "red", "blue", "green", "silver", "golden", "wooden", "broken", "quiet", "loud",
              "tiny", "giant", "ancient", "modern", "strange", "usual")
NOUNS = ("car", "boat", "key", "book", "song", "city", "dog", "cat", "horse", "garden", "house",
         "river", "mountain", "lamp", "clock", "coat", "hat", "ring", "door", "bridge", "tower",
         "island", "violin", "painting")
FIRST_NAMES = ("Alice", "Bruno", "Chen", "Dara", "Emil", "Farah", "Gus", "Hana", "Ivan", "Jun",
               "Kofi", "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tess",
               "Umar", "Vera", "Wim", "Xena", "Yusuf", "Zoe", "Arno", "Bea", "Cyril", "Dina",
               "Elio", "Fay")
LAST_NAMES = ("Abbott", "Baker", "Costa", "Duarte", "Eriksen", "Fischer", "Garcia", "Haddad",
              "Ito", "Jensen", "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Petrov",
              "Quint", "Rossi", "Sato", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz",
              "Zhang", "Adler", "Bauer", "Cohen", "Dubois", "Evans", "Ferreira")
VALUES = ("amber", "azure", "crimson", "ivory", "jade", "violet", "Lisbon", "Oslo", "Kyoto",
          "Lima", "Cairo", "Quito", "Perth", "Tunis", "Hanoi", "Dakar", "seven", "twelve",
          "forty", "ninety", "falcon", "otter", "badger", "heron", "lynx", "walrus", "maple",
          "cedar", "willow", "birch", "copper", "cobalt", "granite", "marble", "saffron",
          "pepper", "cinnamon", "velvet", "linen", "cotton")
RELATIONS = ("mentor", "neighbour", "cousin", "landlord", "partner", "rival", "doctor", "teacher",
             "lawyer", "coach", "editor", "tenant", "banker", "tailor", "barber", "pilot")
INITIALS = tuple("ABCDEFGHIJKLMNOPRSTVW")
FACTS_PER_DOC = (2, 5)  # facts per needle-task document, inclusive (make_needle_task's default)
# A person is (first name, middle initial, last name): 21504 people, enough distinct subjects
# for ~10^5-document needle tasks.
_PERSON_SHAPE = (len(FIRST_NAMES), len(INITIALS), len(LAST_NAMES))
_ATTRIBUTE_SHAPE = (len(ADJECTIVES), len(NOUNS)) + _PERSON_SHAPE
_RELATION_SHAPE = (len(RELATIONS),) + _PERSON_SHAPE


def _lengths(rng: np.random.Generator, count: int, length_range: tuple[int, int]) -> np.ndarray:
    low, high = length_range
    if not 1 <= low <= high:
        raise ConfigError(f"length range must satisfy 1 <= low <= high, got {length_range}")
    return rng.integers(low, high + 1, size=count)


def _name(first: int, initial: int, last: int) -> str:
    return f"{FIRST_NAMES[first]} {INITIALS[initial]}. {LAST_NAMES[last]}"


def _attribute_fact(key: Sequence[int], value: str) -> str:
    adj, noun, *person = key
    return f"The {ADJECTIVES[adj]} {NOUNS[noun]} of {_name(*person)} is {value}."


def _relation_fact(key: Sequence[int], other: str) -> str:
    rel, *person = key
    return f"The {RELATIONS[rel]} of {_name(*person)} is {other}."


def _unique_keys(rng: np.random.Generator, count: int, shape: tuple[int, ...],
                 what: str) -> list[list[int]]:
    """`count` distinct index tuples into `shape` (lists of Python ints)."""
    space = int(np.prod(shape))
    if count > space:
        raise ConfigError(f"{count} {what} facts requested but only {space} distinct ones exist")
    flat = rng.choice(space, size=count, replace=False)
    return np.stack(np.unravel_index(flat, shape), axis=1).tolist()


def _random_fact(rng: np.random.Generator) -> str:
    key = [int(rng.integers(n)) for n in _ATTRIBUTE_SHAPE]
    return _attribute_fact(key, VALUES[int(rng.integers(len(VALUES)))])


def make_corpus(num_docs: int, doc_len_range: tuple[int, int] = (2, 6),
                vocab: Sequence[str] | tuple[int, int] | range | None = None,
                seed: int = 0) -> list[Document]:
    """`num_docs` random documents.

    `vocab` picks the kind (and the unit of `doc_len_range`):
    - None: text of built-in fact sentences ("The lucky boat of Lena K. Sato is amber."),
      lengths in sentences;
    - a sequence of words: text of space-separated words drawn from it, lengths in words;
    - a (low, high) pair of ints or a `range`: token ids drawn from [low, high), lengths in tokens.
    """
    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, num_docs, doc_len_range)
    if isinstance(vocab, range):
        if vocab.step != 1:
            raise ConfigError(f"a token range must have step 1, got {vocab}")
        vocab = (vocab.start, vocab.stop)
    if vocab is None:
        texts = [" ".join(_random_fact(rng) for _ in range(n)) for n in lengths]
        return [Document(str(i), text=t) for i, t in enumerate(texts)]
    if len(vocab) == 2 and all(isinstance(v, (int, np.integer)) for v in vocab):
        low, high = map(int, vocab)
        if not 0 <= low < high:
            raise ConfigError(f"token range must satisfy 0 <= low < high, got {vocab}")
        return [Document(str(i), tokens=rng.integers(low, high, size=n).tolist())
                for i, n in enumerate(lengths)]
    words = list(vocab)
    if not words or not all(isinstance(w, str) and w for w in words):
        raise ConfigError("vocab must be None, a (low, high) token range or non-empty words")
    return [Document(str(i), text=" ".join(words[j] for j in rng.integers(len(words), size=n)))
            for i, n in enumerate(lengths)]


def make_needle_task(num_docs: int, num_queries: int, seed: int = 0, hops: int = 1,
                     facts_per_doc: tuple[int, int] = FACTS_PER_DOC,
                     relation_fraction: float = 0.25, *, people: Sequence[int] | None = None,
                     hard_negatives: int = 0) -> tuple[list[Document], list[Query]]:
    """Fact documents and questions over them.

    Every fact subject, (adjective, noun, person) or (relation, person), is stated once in the
    whole corpus, so each answer has exactly one source.
    - hops=1: "What is the lucky boat of Lena K. Sato?"; reference_ids = (the stating document,).
    - hops=2: "What is the lucky boat of the mentor of Bea T. Xu?"; one document says "The
      mentor of Bea T. Xu is Lena K. Sato.", another states Lena K. Sato's lucky boat;
      reference_ids are both, in chain order.
    Each needle sits in its own document (so num_queries * hops <= num_docs) at a random place
    among distractor facts; a fraction `relation_fraction` of distractors are relation facts.

    people: the persons the corpus may name (flat indices into `PERSON_SHAPE`, see
    `person_index`); None = all 21504. Every subject and every named object comes from it, so
    disjoint sets give corpora that share no entity (a train / evaluation split by entity).
    hard_negatives: per needle fact (each hop), that many extra one-fact documents whose key
    differs from the needle's in exactly one part (adjective, noun or relation, first name,
    initial, last name; in turn, skipping parts without an unused variant among `people`), with
    their own values: "The lucky boat of Lena K. Sato" vs "The lucky boat of Lena T. Sato" or
    "The lucky coat of Lena K. Sato". They are appended after the `num_docs` documents: the
    j-th hard negative of query q, hop h has id `num_docs + (q * hops + h) * hard_negatives + j`.
    Their keys are
    stated nowhere else, so every answer keeps exactly one source. With the defaults the output
    is the same as without these arguments.
    """
    if hops not in (1, 2):
        raise ConfigError(f"hops must be 1 or 2, got {hops}")
    if num_queries * hops > num_docs:
        raise ConfigError(f"{num_queries} queries x {hops} hops need at least "
                         f"{num_queries * hops} documents, got {num_docs}")
    allowed = _allowed_people(people)
    if hard_negatives < 0:
        raise ConfigError(f"hard_negatives must be >= 0, got {hard_negatives}")
    rng = np.random.default_rng(seed)
    counts = _lengths(rng, num_docs, facts_per_doc)  # facts per document
    starts = np.cumsum(counts) - counts  # each document's first fact slot
    total = int(counts.sum())
    is_relation = rng.random(total) < relation_fraction
    needle_docs = rng.choice(num_docs, size=(num_queries, hops), replace=False)
    needle_slots = starts[needle_docs] + rng.integers(counts[needle_docs])  # [Q, hops]
    is_relation[needle_slots] = False
    if hops == 2:
        is_relation[needle_slots[:, 0]] = True  # the first hop names the bridge person
    num_relations = int(is_relation.sum())
    attr_keys = iter(_person_keys(rng, total - num_relations, _ATTRIBUTE_SHAPE[:2], allowed,
                                  "attribute"))
    rel_keys = iter(_person_keys(rng, num_relations, _RELATION_SHAPE[:1], allowed, "relation"))
    kinds = is_relation.tolist()
    keys = [next(rel_keys) if r else next(attr_keys) for r in kinds]
    values = rng.integers(len(VALUES), size=total).tolist()
    named = _persons(allowed[rng.integers(len(allowed), size=total)])
    objects = [_name(*p) if r else VALUES[v] for r, v, p in zip(kinds, values, named)]

    queries = []
    for q, (doc_row, slot_row) in enumerate(zip(needle_docs.tolist(), needle_slots.tolist())):
        adj, noun, *person = keys[slot_row[-1]]
        subject = _name(*person)
        if hops == 2:
            objects[slot_row[0]] = subject  # "The mentor of X is {subject}."
            rel, *first_person = keys[slot_row[0]]
            subject = f"the {RELATIONS[rel]} of {_name(*first_person)}"
        question = f"What is the {ADJECTIVES[adj]} {NOUNS[noun]} of {subject}?"
        queries.append(Query(str(q), question, tuple(map(str, doc_row)), (objects[slot_row[-1]],)))

    facts = [(_relation_fact if r else _attribute_fact)(k, o)
             for r, k, o in zip(kinds, keys, objects)]
    documents = [Document(str(i), text=" ".join(facts[s:s + n]))
                 for i, (s, n) in enumerate(zip(starts.tolist(), counts.tolist()))]
    if hard_negatives:
        used, ok = set(map(tuple, keys)), set(allowed.tolist())
        slots = needle_slots.reshape(-1).tolist()  # (query, hop) order
        negatives = [_hard_negative(rng, keys[s], kinds[s], j, allowed, ok, used)
                     for s in slots for j in range(hard_negatives)]
        documents += [Document(str(num_docs + i), text=text) for i, text in enumerate(negatives)]
    return documents, queries


PERSON_SHAPE = _PERSON_SHAPE  # (first names, initials, last names)


_NAME_INDEX = tuple({name: i for i, name in enumerate(names)}
                    for names in (FIRST_NAMES, INITIALS, LAST_NAMES))


def _flat_person(first: int, initial: int, last: int) -> int:
    return (first * _PERSON_SHAPE[1] + initial) * _PERSON_SHAPE[2] + last


def person_index(name: str) -> int:
    """Flat index of a person named "First I. Last" (the inverse of the names facts use)."""
    try:
        first, initial, last = name.split(" ")
        return _flat_person(_NAME_INDEX[0][first], _NAME_INDEX[1][initial.rstrip(".")],
                            _NAME_INDEX[2][last])
    except (KeyError, ValueError):
        raise ConfigError(f"{name!r} is not a synthetic person name (First I. Last)") from None


def _allowed_people(people: Sequence[int] | None) -> np.ndarray:
    space = int(np.prod(_PERSON_SHAPE))
    if people is None:
        return np.arange(space)
    allowed = np.asarray(people, dtype=np.int64).reshape(-1)
    if allowed.size == 0 or allowed.min() < 0 or allowed.max() >= space:
        raise ConfigError(f"people must be a non-empty set of person indices in [0, {space})")
    return allowed


def _persons(flat: np.ndarray) -> list[list[int]]:
    return np.stack(np.unravel_index(flat, _PERSON_SHAPE), axis=1).tolist()


def _person_keys(rng: np.random.Generator, count: int, head: tuple[int, ...],
                 allowed: np.ndarray, what: str) -> list[list[int]]:
    """`count` distinct keys (head indices..., first, initial, last) over the allowed people."""
    keys = _unique_keys(rng, count, head + (len(allowed),), what)
    flat = allowed[np.asarray([k[-1] for k in keys], dtype=np.int64)]
    return [k[:-1] + p for k, p in zip(keys, _persons(flat))]


def _hard_negative(rng: np.random.Generator, key: Sequence[int], is_relation: bool, j: int,
                   allowed: np.ndarray, ok: set, used: set) -> str:
    """A fact whose key is `key` with exactly one part changed: part j % len(key) if it has an
    unused variant among the allowed people, else the next part that has one."""
    shape = (_RELATION_SHAPE if is_relation else _ATTRIBUTE_SHAPE)
    for step in range(len(key)):
        part = (j + step) % len(key)
        candidates = []
        for value in range(shape[part]):
            new = list(key)
            new[part] = value
            if value != key[part] and tuple(new) not in used and \
                    _flat_person(*new[-3:]) in ok:
                candidates.append(new)
        if candidates:
            new = candidates[int(rng.integers(len(candidates)))]
            used.add(tuple(new))
            if is_relation:
                other = _name(*_persons(allowed[rng.integers(len(allowed), size=1)])[0])
                return _relation_fact(new, other)
            return _attribute_fact(new, VALUES[int(rng.integers(len(VALUES)))])
    raise ConfigError(f"no unused hard negative for the key {list(key)} among the allowed people")


def synthetic_token_corpus(total_tokens: int, doc_len: int | tuple[int, int] = 512,
                           vocab_size: int = 32000, seed: int = 0, *,
                           low: int = 1) -> Iterator[Document]:
    """Yield token-id documents of `doc_len` tokens (an int or an inclusive range) until exactly
    `total_tokens` tokens have been produced (the last document may be shorter).

    Ids are drawn uniformly from [low, vocab_size); the default `low=1` avoids the pad id 0.
    Only one document exists at a time, so 10M-token benchmarks cost no corpus memory.
    """
    if total_tokens < 1:
        raise ConfigError(f"total_tokens must be positive, got {total_tokens}")
    if not 0 <= low < vocab_size:
        raise ConfigError(f"need 0 <= low < vocab_size, got low={low}, vocab_size={vocab_size}")
    length_range = (doc_len, doc_len) if isinstance(doc_len, (int, np.integer)) else doc_len
    rng = np.random.default_rng(seed)
    remaining, index = int(total_tokens), 0
    while remaining:
        n = min(int(_lengths(rng, 1, length_range)[0]), remaining)
        yield Document(str(index), tokens=rng.integers(low, vocab_size, size=n).tolist())
        remaining -= n
        index += 1
