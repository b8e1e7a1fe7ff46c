"""Fit every candidate law, validate each on held-out runs, and pick one (`--law auto` or a name)."""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pandas as pd

from .errors import AnalysisError
from .diagnostics import short
from .heap import keep_freed_memory
from .fit import FitResult, Layout, Problem, bootstrap, distinct_points, fit_law, log_progress, resolve_per_domain
from .inputs import LawInputs
from .law_domain import LeftOut, left_out, rows_for, scratch_experts
from .laws import LAWS, get_law, specialize
from .validate import heldout, heldout_score, pick_law, shared_screening


@dataclass
class Analysis:
    rows: pd.DataFrame                                # the selected rows (each law fits rows_for(name))
    left_out: LeftOut | None = None                   # rows outside some candidate law's domain (law_domain)
    fits: dict = field(default_factory=dict)          # law name -> FitResult
    failures: dict = field(default_factory=dict)      # law name -> why it could not be fitted
    checks: dict = field(default_factory=dict)        # law name -> held-out checks
    heldout_rows: dict = field(default_factory=dict)  # law name -> table of held-out predictions
    scores: dict = field(default_factory=dict)        # law name -> mean held-out relative error
    chosen: str | None = None
    why: str = ""
    split_law: str | None = None                      # the law that chooses the split (see analyze)
    split_why: str = ""
    seconds: float = 0.0

    @property
    def split_fit(self) -> FitResult:
        return self.fits[self.split_law] if self.split_law is not None else self.fit

    def rows_for(self, name: str | None = None) -> pd.DataFrame:
        """The rows law `name` (default: the split law) was fitted on (law_domain.rows_for)."""
        return rows_for(self.rows, LAWS[name or self.split_law or self.chosen])

    @property
    def fit(self) -> FitResult:
        if self.chosen is None:
            raise AnalysisError("no law could be fitted: " + "; ".join(f"{k}: {v}" for k, v in self.failures.items()))
        return self.fits[self.chosen]

    def fit_json(self, name: str | None = None) -> dict:
        name = name or self.chosen
        if name is None:
            return self.fit.summary()  # self.fit raises: no law could be fitted, and why
        out = self.fits[name].summary()
        out["heldout"] = self.checks.get(name, {})
        out["heldout_score"] = self.scores.get(name)
        if name == self.chosen:
            out["chosen_because"] = self.why
        if self.left_out is not None:
            out["left_out"] = self.left_out.as_dict()
        return out


def analyze(rows: pd.DataFrame, law: str = "auto", *, laws: list | None = None, per_domain: bool | None = None,
            n_bootstrap: int = 0, seed: int = 0, validate: bool = True, progress: bool = False,
            workers: int | None = None) -> Analysis:
    """Fit `laws` (default: all; with a named law and no validation, only that one) on `rows`.

    per_domain: None (default) one coefficient set per domain with shared exponents whenever the rows
    have more than one domain (and enough points for it, see fit.resolve_per_domain), True/False force it.
    With law="auto" the pick prefers a law identified by the grid (diagnostics.diagnose): an unidentified
    law is chosen only when no identified law was validated, and the reason says so. The bootstrap of the
    chosen law can reveal that it is not identified (a wide interval); the pick is then redone.
    A law is fitted on the rows it describes (law_domain.rows_for: without the experts trained from scratch
    for a law that is a power of the mixture tokens) and every law's held-out errors leave out the rows some
    candidate cannot describe (result.left_out says which), so the laws are compared on the same rows.
    workers: processes that fit the laws side by side (None: one per available core, for tables of at least
    PARALLEL_MIN_ROWS rows); the result is the same as with one.
    """
    t0 = time.perf_counter()
    if law != "auto":
        get_law(law)  # unknown names fail here, before any work
    names = laws or (list(LAWS) if (law == "auto" or validate) else [law])
    if law != "auto" and law not in names:
        names = [law] + names
    outside = left_out(rows, [LAWS[n] for n in names])
    if outside is not None:
        log_progress(outside.sentence(), progress)
    _require_enough_points(rows, names, per_domain)
    result = Analysis(rows=rows, left_out=outside)
    unscored = scratch_experts if outside is not None else None
    for name, (fit, checks, error) in zip(names, _fit_laws(rows, names, per_domain, validate, progress, workers,
                                                           unscored)):
        if error is not None:
            result.failures[name] = error
            log_progress(f"{name}: not fitted: {error}", progress)
            continue
        result.fits[name] = fit
        if validate:
            result.checks[name], result.heldout_rows[name] = checks
            result.scores[name] = heldout_score(result.checks[name])
    booted = set()
    while True:
        _choose(result, law)
        todo = [n for n in dict.fromkeys([result.chosen, result.split_law])
                if n is not None and n_bootstrap and n not in booted]
        if not todo:
            break
        before = {n: result.fits[n].diagnostics["identified"] for n in todo}
        for name in todo:
            fit, law_rows = result.fits[name], result.rows_for(name)
            problem = fit.problem if fit.problem is not None else Problem(
                fit.layout, LawInputs.from_table(law_rows, fit.domains), law_rows["eval_loss"].to_numpy(float))
            fit.boot_theta = bootstrap(fit, problem, law_rows, n_bootstrap, seed=seed, progress=progress)
            booted.add(name)
        changed = [n for n in todo if result.fits[n].diagnostics["identified"] != before[n]]
        if law != "auto" or not changed:
            break
        log_progress(f"the bootstrap shows {', '.join(changed)} is not identified by this grid: "
                     f"choosing again", progress)
    result.seconds = time.perf_counter() - t0
    log_progress(f"fits done in {result.seconds:.1f} s; {result.why}"
                 + (f"; {result.split_why}" if result.split_why else ""), progress)
    return result


# Below this many rows the fits of all laws take a few seconds, not worth the worker processes.
PARALLEL_MIN_ROWS = 50


def _fit_one(rows: pd.DataFrame, name: str, per_domain, validate: bool, progress: bool, unscored=None):
    """(FitResult, (held-out checks, held-out rows) or None, None) for one law, or (None, None, why not).
    Fitted on the rows the law describes (law_domain.rows_for); `unscored` as validate.heldout's."""
    try:
        rows = rows_for(rows, LAWS[name])
        # Resolved once on all rows: the held-out refits use the same layout as the full fit.
        layout_per_domain, _ = resolve_per_domain(rows, LAWS[name], per_domain)
        # The full fit and its held-out refits converge the same screened starts (validate.shared_screening).
        screened = shared_screening(rows, LAWS[name], layout_per_domain) if validate else None
        fit = fit_law(rows, LAWS[name], per_domain=per_domain, screened=screened, progress=progress)
    except AnalysisError as e:
        return None, None, str(e)
    return fit, (heldout(rows, LAWS[name], layout_per_domain, progress, screened, unscored)
                 if validate else None), None


def _fit_laws(rows, names, per_domain, validate, progress, workers, unscored=None) -> list:
    """_fit_one for each law of `names`, in that order: in `workers` processes when there is enough work."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if len(rows) >= PARALLEL_MIN_ROWS else 1
    workers = max(1, min(int(workers), len(names)))
    if workers == 1:
        return [_fit_one(rows, name, per_domain, validate, progress, unscored) for name in names]
    # fork: spawn would re-run the caller's main module in each worker, which a script without an
    # `if __name__ == "__main__"` guard does not survive. The workers use numpy and scipy only (no torch, no
    # OpenMP), whose thread pools are fork-safe.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                             initializer=_worker_setup) as pool:
        futures = [pool.submit(_fit_one, rows, name, per_domain, validate, progress, unscored) for name in names]
        return [f.result() for f in futures]


def _worker_setup() -> None:
    """A worker's BLAS uses one thread (the workers already fill the cores, and the fits' matrices are small),
    and its heap keeps freed pages for the next LM step (heap.keep_freed_memory)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    keep_freed_memory()


def _identified(result: Analysis, name: str) -> bool:
    return bool(result.fits[name].diagnostics["identified"])


def _not_identified(result: Analysis, name: str) -> str:
    return f"{name} is not identified by this grid ({short(result.fits[name].diagnostics)})"


def _choose(result: Analysis, law: str) -> None:
    """Set result.chosen/why and split_law/split_why from the scores and the fits' diagnostics."""
    diags = {k: f.diagnostics for k, f in result.fits.items()}
    if law == "auto":
        sizes = {k: f.layout.size for k, f in result.fits.items()}
        result.chosen, result.why = pick_law(result.scores, sizes, diags)
        if result.chosen is None and result.fits:
            # Nothing could be validated: prefer a split-aware law, the point of the analysis, and an
            # identified one.
            aware = [k for k in result.fits if LAWS[k].split_aware] or list(result.fits)
            result.chosen = next((k for k in aware if _identified(result, k)), aware[0])
            result.why = f"no held-out check could run; {result.chosen} used without validation"
            if not _identified(result, result.chosen):
                result.why += f" ({_not_identified(result, result.chosen)})"
    else:
        if law in result.failures:
            raise AnalysisError(f"law {law!r} cannot be fitted: {result.failures[law]}")
        result.chosen, result.why = law, f"law {law} chosen by the user"
        if not _identified(result, law):
            result.why += f"; {_not_identified(result, law)}"
    result.split_law, result.split_why = result.chosen, ""
    if law == "auto" and result.chosen and not LAWS[result.chosen].split_aware:
        # The best predictor cannot tell D from D', so it cannot answer the split question: the split
        # comes from the law auto would pick among those that can (identified first, the same tie rule),
        # and the report says so.
        aware = {k: v for k, v in result.scores.items() if v is not None and LAWS[k].split_aware}
        if aware:
            sizes = {k: result.fits[k].layout.size for k in aware}
            result.split_law, why = pick_law(aware, sizes, {k: diags[k] for k in aware})
            why = (why.split(": ", 1)[1] if ": " in why else why).replace("no law is identified",
                                                                         "no split-aware law is identified")
            result.split_why = (f"{result.chosen} (held-out error {result.scores[result.chosen]:.2%}) cannot tell D "
                                f"from D', so the split comes from {result.split_law}, of the split-aware laws: "
                                f"{why}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def points_needed(rows: pd.DataFrame, law, per_domain: bool | None = False) -> tuple[int, int]:
    """(distinct points `law` needs, distinct points `rows` give): fit_law's identifiability test, no fit.
    per_domain None: the layout analyze would use (fit.resolve_per_domain)."""
    x = LawInputs.from_table(rows)
    per_domain, _ = resolve_per_domain(rows, law, per_domain)
    layout = Layout(law, specialize(law, x), x.domains, per_domain)
    return layout.size + 1, distinct_points(rows, layout.per_domain)


def _require_enough_points(rows: pd.DataFrame, names: list, per_domain: bool | None) -> None:
    """Too few rows for every law is one error about the data, not one 'not fitted' per law (and, with
    nothing fitted, a KeyError or an empty report further on)."""
    needs, have = {}, None
    for name in names:
        try:
            needs[name], have = points_needed(rows, LAWS[name], per_domain)
        except AnalysisError:
            continue  # a law this grid cannot hold at all (e.g. interaction with one N): fit_law says why
    if not needs or any(need <= have for need in needs.values()):
        return
    models = rows["run_id"].nunique() if "run_id" in rows.columns else len(rows)
    selection = rows.attrs.get("selection")
    points = _plural(have, "distinct (N, D, D', role) point")
    need = (f"it needs at least {needs[names[0]]}" if len(needs) == 1 else
            f"the least demanding law needs at least {min(needs.values())} ("
            + ", ".join(f"{k}: {v}" for k, v in needs.items()) + ")")
    raise AnalysisError(
        f"too few data for {'any law' if len(needs) > 1 else 'law ' + repr(names[0])}: "
        f"{_plural(len(rows), 'row')} from {_plural(models, 'trained model')}, {points}"
        + (f" (row selection {selection!r})" if selection else "")
        + f"; {need}: add runs at more model sizes, budgets or splits")
