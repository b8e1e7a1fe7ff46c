"""The paper's synthetic phonebook: K books ("domains") of fictional name -> number facts.

Every entry is 16 characters, "\\n" + name (8) + ":" + number (6), so the training text of a book is a
fixed-stride stream of entries: epoch e of book k is a seeded permutation of its entries, and
sequence i is characters [i*seq_len, i*seq_len + seq_len + 1) of that stream. Held-out text shows the
same facts in orderings training never reads (this is a memorisation task: recall accuracy, greedy
decoding of the number given the name, is its real measure).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..typed_config import Section
from .source import TokenSource

CONSONANTS = "bdfghklmnprstvz"
VOWELS = "aeiou"
ALPHABET = "\n :0123456789" + "".join(sorted(set(CONSONANTS + VOWELS)))
ENTRY_LEN = 16
NAME_END = 9  # "\n" + 8-character name; the ":" follows at index 9, the digits at 10..15


class CharTokenizer:
    def __init__(self, alphabet: str = ALPHABET):
        self.alphabet = alphabet
        self.index = {c: i for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)


def _names(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct names 'CVCV CVC' (2.1M possible)."""
    c, v = np.array(list(CONSONANTS)), np.array(list(VOWELS))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        parts = [rng.choice(c, count), rng.choice(v, count), rng.choice(c, count), rng.choice(v, count),
                 rng.choice(c, count), rng.choice(v, count), rng.choice(c, count)]
        for a, b, cc, d, e, f, g in zip(*parts):
            name = f"{a}{b}{cc}{d} {e}{f}{g}"
            if name not in seen and len(out) < count:
                seen.add(name)
                out.append(name)
    return out


@dataclass(frozen=True)
class PhonebookArgs(Section):
    """data=phonebook, typed (conf/data/phonebook.yaml declares the keys, their defaults and meanings)."""
    kind: str
    n_domains: int
    """books: the domains"""
    entries_per_domain: int
    """name:number facts per book"""
    heldout_sequences: int
    """held-out sequences per book: the same facts in orders not trained on"""
    data_seed: int
    """the facts (the training seed only changes the order they are read in)"""
    allow_repetition: bool
    section = "data"


class Phonebook(TokenSource):
    def __init__(self, n_domains: int, entries_per_domain: int, heldout_sequences: int,
                 seq_len: int, seed: int, data_seed: int = 0):
        if n_domains < 1 or entries_per_domain < 1:
            raise ValueError(f"phonebook needs n_domains >= 1 and entries_per_domain >= 1, "
                             f"got {n_domains} and {entries_per_domain}")
        self.n_domains, self.entries_per_domain = n_domains, entries_per_domain
        self.heldout_sequences, self.seq_len, self.seed, self.data_seed = heldout_sequences, seq_len, seed, data_seed
        self.tokenizer = CharTokenizer()
        self.vocab_size = self.tokenizer.vocab_size
        self.domains = [f"d{k}" for k in range(n_domains)]
        self.weights = [1.0] * n_domains
        # The facts depend on data_seed only: every training seed sees the same phonebook.
        rng = np.random.default_rng([data_seed, 1])
        names = _names(rng, n_domains * entries_per_domain)
        numbers = rng.integers(0, 10**6, n_domains * entries_per_domain)
        self.entries = [
            [(names[k * entries_per_domain + i], f"{numbers[k * entries_per_domain + i]:06d}")
             for i in range(entries_per_domain)]
            for k in range(n_domains)
        ]
        self._tokens = np.stack([
            np.stack([self.tokenizer.encode(f"\n{n}:{num}") for n, num in book]) for book in self.entries
        ])  # [K, entries, 16]

    @classmethod
    def from_config(cls, cfg, seq_len: int, seed: int) -> "Phonebook":
        a = PhonebookArgs.of(cfg)
        return cls(a.n_domains, a.entries_per_domain, a.heldout_sequences, seq_len=seq_len, seed=seed,
                   data_seed=a.data_seed)

    def identity(self) -> dict:
        return {"kind": "phonebook", "n_domains": self.n_domains, "entries_per_domain": self.entries_per_domain,
                "heldout_sequences": self.heldout_sequences, "data_seed": self.data_seed,
                "tokenizer": "char:" + self.tokenizer.alphabet}

    @lru_cache(maxsize=256)
    def _epoch(self, domain: int, epoch: int, salt: int) -> np.ndarray:
        return np.random.default_rng([self.seed, salt, domain, epoch]).permutation(self.entries_per_domain)

    def _stream(self, domain: int, start: int, length: int, salt: int) -> np.ndarray:
        positions = np.arange(start, start + length)
        entry, char = np.divmod(positions, ENTRY_LEN)
        epoch, slot = np.divmod(entry, self.entries_per_domain)
        ids = np.empty(length, dtype=np.int64)
        for e in np.unique(epoch):
            where = epoch == e
            ids[where] = self._tokens[domain, self._epoch(domain, int(e), salt)[slot[where]], char[where]]
        return ids

    def domain_sequence(self, domain: int, index: int) -> np.ndarray:
        return self._stream(domain, index * self.seq_len, self.seq_len + 1, salt=0)

    def heldout(self, domain: int) -> np.ndarray:
        return np.stack([self._stream(domain, i * self.seq_len, self.seq_len + 1, salt=1)
                         for i in range(self.heldout_sequences)])

    def domain_train_sequences(self, domain: int) -> int:
        # Text of one pass over a book, in sequences (the phonebook is meant to be repeated).
        return max(1, self.entries_per_domain * ENTRY_LEN // self.seq_len)

    def recall_items(self, domain: int) -> tuple[np.ndarray, np.ndarray]:
        """Each fact as one sequence, and the mask of target positions that are number digits.

        Greedy decoding returns the whole number exactly iff the argmax is right at every digit given
        the true prefix, so one teacher-forced pass measures exact-match recall of all facts at once.
        """
        tokens = self._tokens[domain]
        mask = np.zeros(tokens.shape[1] - 1, dtype=bool)
        mask[NAME_END:] = True  # targets at positions 10..15 are predicted from inputs 9..14
        return tokens, np.broadcast_to(mask, (len(tokens), len(mask)))
