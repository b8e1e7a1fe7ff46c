"""Token sources: K domains, each an addressable stream of fixed-length training sequences.

Every sequence is addressed by (domain, index), so a batch is a pure function of the step: a resumed or
extended run reads exactly the tokens it would have read without interruption, on any number of ranks.
"""
from __future__ import annotations

from .source import MIXTURE, MixtureSchedule, TokenSource


def build_source(data_cfg, seq_len: int, seed: int) -> TokenSource:
    kind = data_cfg.kind
    if kind == "phonebook":
        from .phonebook import Phonebook

        return Phonebook.from_config(data_cfg, seq_len=seq_len, seed=seed)
    if kind == "hf":
        from .hf import HFSource

        return HFSource.from_config(data_cfg, seq_len=seq_len, seed=seed)
    raise ValueError(f"data.kind={kind!r} is unknown; known kinds: phonebook, hf")


__all__ = ["MIXTURE", "MixtureSchedule", "TokenSource", "build_source"]
