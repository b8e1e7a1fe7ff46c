"""Where a law is defined, and the rows each candidate law is fitted and scored on.

A law whose loss is a power of G, the mixture tokens a model has seen (a term over laws._size_mixture:
log_bilinear and additive), is infinite at G = 0. An expert trained from scratch on its own domain (D = 0, the
split fraction 0) has G = 0: the inputs floor its count at one token, so such a law "predicts" it from
G = 1 token, 13 decades below any measured G, and one such row can swing a fit or a held-out score by orders of
magnitude (the phonebook's 5-fold check read > 1,000% from these rows alone).
So such a law is fitted without those rows (rows_for), the laws that describe them keep them, and the held-out
errors of every law leave them out (validate.heldout's `unscored`, with scratch_experts): laws are compared on
the rows all of them describe. The measured
curve still shows them (it is drawn from the whole table), the report says what was left out and why, and a
law fitted without them searches the split over the fractions that remain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import AnalysisError
from .laws import Law, _size_mixture
from .roles import BASELINE, role


def needs_mixture_tokens(law: Law) -> bool:
    """The law's loss is a power of G, the mixture tokens seen: it is not defined where G = 0."""
    return any(t.size is _size_mixture for t in law.terms)


@dataclass(frozen=True)
class LeftOut:
    """Rows outside the domain of some candidate law, and why."""

    n_rows: int
    n_models: int
    laws: tuple        # the candidate laws that cannot describe them
    loss_range: tuple  # (min, max) measured eval_loss of those rows

    def sentence(self) -> str:
        names = " and ".join(self.laws)
        what = "a power" if len(self.laws) == 1 else "powers"
        return (f"{self.n_rows} row(s) of {self.n_models} expert(s) trained from scratch (D = 0: no mixture tokens, "
                f"measured loss {self.loss_range[0]:.4g}–{self.loss_range[1]:.4g}) are outside the domain of "
                f"{names}, {what} of the mixture tokens G that {'is' if len(self.laws) == 1 else 'are'} not defined "
                "at G = 0: fitted without them, they search the split over the measured fractions above 0; every "
                "law's held-out errors leave them out, so the laws are compared on the same rows")

    def as_dict(self) -> dict:
        return {"n_rows": self.n_rows, "n_models": self.n_models, "laws": list(self.laws),
                "loss_range": list(self.loss_range), "why": self.sentence()}


def scratch_experts(rows: pd.DataFrame) -> np.ndarray:
    """Experts trained from scratch: D = 0, D' > 0, not the mixture baseline (which has seen D' mixture
    tokens)."""
    return ((rows["pretrain_tokens"].to_numpy(float) <= 0) & (rows["special_tokens"].to_numpy(float) > 0)
            & (role(rows) != BASELINE).to_numpy())


def rows_for(rows: pd.DataFrame, law: Law) -> pd.DataFrame:
    """The rows `law` is fitted on: all of them, or without the experts trained from scratch for a law that
    needs mixture tokens."""
    if not needs_mixture_tokens(law):
        return rows
    scratch = scratch_experts(rows)
    if not scratch.any():
        return rows
    kept = rows[~scratch].reset_index(drop=True)
    kept.attrs.update(rows.attrs)
    if len(kept) == 0:
        raise AnalysisError(f"every row is an expert trained from scratch (D = 0), where {law.name} is not "
                            "defined: name a law that is (--law two_source or chinchilla)")
    return kept


def left_out(rows: pd.DataFrame, laws: list) -> LeftOut | None:
    """What `laws` (the candidates) leave out of `rows`: None when every candidate describes every row."""
    needing = tuple(law.name for law in laws if needs_mixture_tokens(law))
    scratch = scratch_experts(rows)
    if not needing or not scratch.any():
        return None
    out = rows[scratch]
    loss = out["eval_loss"].to_numpy(float)
    return LeftOut(n_rows=int(scratch.sum()), n_models=int(out["run_id"].nunique()), laws=needing,
                   loss_range=(float(np.min(loss)), float(np.max(loss))))
