"""The arrays a law consumes, computed once from the tidy table.

A row's role (own, baseline or cross) is roles.role's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .roles import BASELINE, OWN, role


@dataclass
class LawInputs:
    n_params: np.ndarray        # N
    pretrain: np.ndarray        # D, mixture tokens of the seed
    special: np.ndarray         # D', tokens after the split
    weight: np.ndarray          # p, the evaluated domain's share of the mixture
    is_own: np.ndarray          # bool
    is_baseline: np.ndarray     # bool
    domain: np.ndarray          # int index into `domains` (eval_domain)
    domains: list = field(default_factory=list)

    @classmethod
    def from_table(cls, df: pd.DataFrame, domains: list | None = None) -> "LawInputs":
        names = sorted(df["eval_domain"].unique()) if domains is None else list(domains)
        index = {d: i for i, d in enumerate(names)}
        roles = role(df)
        baseline = (roles == BASELINE).to_numpy()
        own = (roles == OWN).to_numpy()
        return cls(
            n_params=df["n_params"].to_numpy(float),
            pretrain=df["pretrain_tokens"].to_numpy(float),
            special=df["special_tokens"].to_numpy(float),
            weight=df["mixture_weight"].to_numpy(float),
            is_own=own,
            is_baseline=baseline,
            domain=np.array([index.get(d, 0) for d in df["eval_domain"]], dtype=int),
            domains=names,
        )

    @classmethod
    def expert_path(cls, n_params, pretrain, special, weight, domain: int, domains: list, baseline=False):
        """Hypothetical rows (for predictions): an expert of `domain` (or the baseline) on `domain`."""
        pretrain = np.atleast_1d(np.asarray(pretrain, float))
        shape = pretrain.shape
        full = lambda v, dt=float: np.broadcast_to(np.asarray(v, dt), shape).copy()
        return cls(
            n_params=full(n_params), pretrain=pretrain, special=full(special), weight=full(weight),
            is_own=full(not baseline, bool), is_baseline=full(baseline, bool),
            domain=full(domain, int), domains=list(domains),
        )

    def __len__(self) -> int:
        return len(self.pretrain)

    def take(self, idx) -> "LawInputs":
        return LawInputs(self.n_params[idx], self.pretrain[idx], self.special[idx], self.weight[idx],
                         self.is_own[idx], self.is_baseline[idx], self.domain[idx], self.domains)

    # Token counts the laws use. Counts are floored at one token so a zero count (a pure expert, D = 0)
    # gives a finite log; real runs train far more than one token, so the floor never binds otherwise.
    @property
    def total_tokens(self):
        return np.maximum(self.pretrain + self.special, 1.0)

    @property
    def mixture_tokens(self):
        """Mixture tokens seen: D for an expert, D + D' for the baseline."""
        return self.pretrain + np.where(self.is_baseline, self.special, 0.0)

    @property
    def domain_tokens(self):
        """Tokens of the evaluated domain seen: p*D + D' (own expert), p*(D + D') (baseline), p*D (cross)."""
        own_part = np.where(self.is_own, self.special, np.where(self.is_baseline, self.weight * self.special, 0.0))
        return np.maximum(self.weight * self.pretrain + own_part, 1.0)
