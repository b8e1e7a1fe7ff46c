"""`data=hf`: real text from any `datasets` source, split into domains by a column or by clustering.

Preparation (prepare.py) runs once per data config and leaves memory-mapped shards under the store;
this source only reads those shards. Training sequence i of a domain is row perm_e[i mod n] of its packed
train array (epoch e = i // n, a permutation seeded by the training seed), so D and D' count tokens
exactly (seq_len targets per sequence), and reading past n sequences is repetition, which plan.py refuses
unless data.allow_repetition is set.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .prepare import MANIFEST, HFDataArgs, pack, prepare
from .source import TokenSource


class HFSource(TokenSource):
    def __init__(self, prepared: Path, seq_len: int, seed: int, weights=None, progress: bool = True):
        self.prepared = Path(prepared)
        self.manifest = json.loads((self.prepared / MANIFEST).read_text())
        self.packed_dir = pack(self.prepared, seq_len, progress)
        self.packed = json.loads((self.packed_dir / MANIFEST).read_text())
        self.seq_len, self.seed = seq_len, seed
        self.domains = list(self.manifest["domains"])
        self.vocab_size = int(self.manifest["vocab_size"])
        per = self.manifest["per_domain"]
        self._train, self._heldout = [], []
        for name in self.domains:
            d = self.packed_dir / per[name]["dir"]
            self._train.append(np.load(d / "train.npy", mmap_mode="r"))
            self._heldout.append(np.load(d / "heldout.npy", mmap_mode="r"))
            if len(self._train[-1]) == 0 or len(self._heldout[-1]) == 0:
                raise ConfigError(
                    f"data: domain {name!r} has {len(self._train[-1])} training and {len(self._heldout[-1])} "
                    f"held-out sequences of {seq_len + 1} tokens ({per[name]['train_tokens']:,} and "
                    f"{per[name]['heldout_tokens']:,} tokens); raise data.heldout_tokens or use more text")
        natural = [float(per[n]["train_tokens"]) for n in self.domains]
        self.natural_weights = [w / sum(natural) for w in natural]
        self.weights = self._weights(weights)

    def _weights(self, given) -> list[float]:
        if given is None:
            return list(self.natural_weights)
        if isinstance(given, dict):
            unknown = sorted(set(given) - set(self.domains))
            if unknown:
                raise ConfigError(f"data.weights names unknown domains {unknown}; the domains are {self.domains}")
            w = [float(given.get(d, 0.0)) for d in self.domains]
        else:
            if len(given) != len(self.domains):
                raise ConfigError(f"data.weights has {len(given)} values for {len(self.domains)} domains "
                                  f"{self.domains}")
            w = [float(x) for x in given]
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigError(f"data.weights={w} must be non-negative and not all zero")
        return [x / sum(w) for x in w]

    @classmethod
    def from_config(cls, cfg, seq_len: int, seed: int) -> "HFSource":
        args = HFDataArgs.of(cfg)
        return cls(prepare(args), seq_len, seed, args.weights, progress=args.progress)

    def identity(self) -> dict:
        return {"kind": "hf", "prepared": self.manifest["key"], "weights": [round(w, 12) for w in self.weights],
                "train_sequences": [len(t) for t in self._train]}

    @lru_cache(maxsize=32)
    def _order(self, domain: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 31, domain, epoch]).permutation(len(self._train[domain]))

    def domain_sequence(self, domain: int, index: int) -> np.ndarray:
        epoch, j = divmod(int(index), len(self._train[domain]))
        return np.asarray(self._train[domain][self._order(domain, epoch)[j]], dtype=np.int64)

    def heldout(self, domain: int) -> np.ndarray:
        return np.asarray(self._heldout[domain], dtype=np.int64)

    def heldout_documents(self, domain: int) -> np.ndarray:
        """The document of each held-out sequence (the one its first target token belongs to): documents
        end in EOS in the flat held-out stream, and sequence i's targets start at token i * seq_len + 1."""
        info = self.manifest["per_domain"][self.domains[domain]]
        flat = np.memmap(self.prepared / info["dir"] / "heldout.bin", dtype=np.dtype(self.manifest["dtype"]), mode="r")
        ends = np.concatenate([[0], np.cumsum(np.asarray(flat) == int(self.manifest["eos_id"]))])
        return ends[np.arange(len(self._heldout[domain])) * self.seq_len + 1]

    def domain_train_sequences(self, domain: int) -> int:
        return len(self._train[domain])

    def token_counts(self) -> dict:
        """Per domain: tokens and documents of each split, as prepared (manifest)."""
        return {n: {k: v for k, v in self.manifest["per_domain"][n].items() if k != "heldout_doc_ids"}
                for n in self.domains}
