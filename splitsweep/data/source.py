from __future__ import annotations

from functools import lru_cache

import numpy as np

MIXTURE = "mixture"


class MixtureSchedule:
    """Which domain each mixture sequence comes from, with the stated weights held exactly.

    Sequences are dealt in blocks: a block of `block` sequences holds round(w_k * block) of domain k
    (largest remainder), in a seeded random order. Mixture sequence i is then domain-k sequence
    number (blocks before it) * count_k + (rank of i among the block's k positions), so the mixture and
    a domain's own stream never read the same sequence twice and both are stateless.
    """

    def __init__(self, domains: list[str], weights: list[float], seed: int, block: int = 240):
        w = np.asarray(weights, dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights must be non-negative and not all zero, got {weights}")
        w = w / w.sum()
        counts = np.floor(w * block).astype(int)
        for k in np.argsort(-(w * block - counts), kind="stable")[: block - counts.sum()]:
            counts[k] += 1
        self.domains, self.weights, self.block, self.seed = list(domains), w, block, seed
        self.counts = counts

    @lru_cache(maxsize=64)
    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(len(self.domains)), self.counts)
        labels = np.random.default_rng([self.seed, 7919, b]).permutation(labels)
        rank = np.zeros_like(labels)
        for k in range(len(self.domains)):
            where = labels == k
            rank[where] = np.arange(where.sum())
        return labels, rank

    def lookup(self, index: int) -> tuple[int, int]:
        """(domain number, index in that domain's stream) of mixture sequence `index`."""
        b, p = divmod(index, self.block)
        labels, rank = self._block(b)
        k = int(labels[p])
        return k, b * int(self.counts[k]) + int(rank[p])

    def consumed(self, n_sequences: int) -> np.ndarray:
        """Sequences of each domain read by the first `n_sequences` mixture sequences."""
        full, rest = divmod(n_sequences, self.block)
        used = full * self.counts.copy()
        if rest:
            labels, _ = self._block(full)
            used += np.bincount(labels[:rest], minlength=len(self.domains))
        return used


class TokenSource:
    """Interface of a data set split into domains. Subclasses fill in the abstract parts."""

    domains: list[str]
    weights: list[float]  # natural token share of each domain in the mixture
    vocab_size: int
    seq_len: int
    seed: int

    def identity(self) -> dict:
        """Everything that determines the token streams (goes into seed and run hashes)."""
        raise NotImplementedError

    def domain_sequence(self, domain: int, index: int) -> np.ndarray:
        """Training sequence `index` of a domain: seq_len + 1 token ids."""
        raise NotImplementedError

    def heldout(self, domain: int) -> np.ndarray:
        """[M, seq_len + 1] held-out token ids of a domain, never read by training."""
        raise NotImplementedError

    def heldout_documents(self, domain: int) -> np.ndarray:
        """The document each held-out sequence belongs to, for standard errors over documents (here every
        sequence is its own document)."""
        return np.arange(len(self.heldout(domain)))

    def domain_train_sequences(self, domain: int) -> int | None:
        """Distinct training sequences of a domain before it repeats (None: unbounded)."""
        return None

    # --- shared machinery -------------------------------------------------------------------
    @property
    def mixture(self) -> MixtureSchedule:
        if not hasattr(self, "_mixture"):
            self._mixture = MixtureSchedule(self.domains, self.weights, self.seed)
        return self._mixture

    def domain_index(self, name: str) -> int:
        if name not in self.domains:
            raise ValueError(f"unknown domain {name!r}; this data set has {self.domains} (or '{MIXTURE}')")
        return self.domains.index(name)

    def sequences(self, stream: str, start: int, count: int, offset: np.ndarray | None = None) -> np.ndarray:
        """`count` sequences of a stream ('mixture' or a domain) from sequence `start`.

        `offset[k]` shifts domain k's stream (an expert continues after what its seed already read).
        """
        offset = np.zeros(len(self.domains), dtype=int) if offset is None else offset
        rows = []
        for i in range(start, start + count):
            if stream == MIXTURE:
                k, j = self.mixture.lookup(i)
            else:
                k, j = self.domain_index(stream), i
            rows.append(self.domain_sequence(k, j + int(offset[k])))
        return np.stack(rows)

