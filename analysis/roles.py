"""The role of a result row: the trained model relative to the domain it is evaluated on.

  own       an expert evaluated on its own domain (expert_domain == eval_domain)
  baseline  the no-split mixture model (expert_domain == MIXTURE), on any domain; its D' tokens were mixture
            tokens
  cross     an expert evaluated on another domain

Pretraining only (special_tokens == 0, the seed itself: fraction 1) is not a role of its own: a D' = 0 row keeps
its role (own, baseline or cross), and the places that count it as an expert path test special_tokens == 0 next
to the role.

The baseline evaluated on the whole mixture is the mixture model on the distribution it was trained on: the law
sees a baseline (its tokens were mixture tokens), the measured paths of a table with only whole-mixture evals
(io.select_rows' fallback) see the one model on its own domain; `baseline_on_mixture=OWN` asks for the latter.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from splitsweep.data import MIXTURE  # expert_domain of the no-split baseline, eval_domain of the whole-mixture eval

OWN, BASELINE, CROSS = "own", "baseline", "cross"


def role(rows, *, baseline_on_mixture: str = BASELINE):
    """The role of one row (a mapping or a pandas Series with expert_domain and eval_domain): a string; or of
    every row of a DataFrame: a Series of strings on its index. A row without eval_domain is evaluated on its
    expert_domain (as io.tidy fills it). baseline_on_mixture: the role of the baseline on the whole mixture,
    BASELINE (the default) or OWN."""
    if baseline_on_mixture not in (BASELINE, OWN):
        raise ValueError(f"baseline_on_mixture must be {BASELINE!r} or {OWN!r}, not {baseline_on_mixture!r}")
    if isinstance(rows, pd.DataFrame):
        expert = rows["expert_domain"]
        evaluated = rows["eval_domain"] if "eval_domain" in rows.columns else expert
        on_mixture = (expert == MIXTURE) & (evaluated == MIXTURE) if baseline_on_mixture == OWN \
            else pd.Series(False, index=rows.index)
        return pd.Series(np.select([on_mixture.to_numpy(), (expert == MIXTURE).to_numpy(),
                                    (expert == evaluated).to_numpy()],
                                   [OWN, BASELINE, OWN], CROSS), index=rows.index, dtype=object)
    if not isinstance(rows, (Mapping, pd.Series)):
        raise TypeError(f"role() takes a row (a mapping or a Series) or a DataFrame, not {type(rows).__name__}")
    expert = rows["expert_domain"]
    evaluated = rows.get("eval_domain", expert)
    if expert == MIXTURE:
        return OWN if baseline_on_mixture == OWN and evaluated == MIXTURE else BASELINE
    return OWN if expert == evaluated else CROSS
