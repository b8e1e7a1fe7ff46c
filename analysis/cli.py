"""`python -m analysis fit|split|report|collect ...` — a stable command line (other tools call these names).

  fit RESULTS --law NAME|auto --out DIR             -> DIR/fit.json (only that file is written or replaced)
        [--per-domain | --shared-coefficients]: default one coefficient set per domain (shared exponents) when
        the data have more than one domain; identifiability warnings (fit.json "diagnostics") go to stderr
  split RESULTS --n-params N --budget-tokens T [--accounting per-path|shared-seed] [--law auto|NAME] --out DIR
        [--extrapolate] [--coverage] [--per-domain | --shared-coefficients]
        (or --compute-flops C instead of --n-params/--budget-tokens: N chosen too) -> DIR/split.json
        D*/T is searched within the measured fractions unless --extrapolate; warnings also go to stderr
  report RESULTS --out DIR [--budget-tokens T] [--n-params N] [--accounting ...] [--extrapolate]
        [--coverage-bootstrap K] [--per-domain | --shared-coefficients]
        -> DIR/report.md, report.html, *.png, fit.json, split.json
        (an earlier report's files in DIR that the new one does not rewrite are removed; no other file is);
        the report opens with how far to trust it (NOT RELIABLE, and what to run next, when a check fails)
  fit, split and report: one coefficient set per domain (exponents shared) by default when the data have more
        than one domain; --shared-coefficients for one set. split and report answer in the accounting the
        rows record (their accounting column; per-path without one) unless --accounting says otherwise.
  next RESULTS --target-n-params N --target-budget-tokens T (--compute-budget FLOPS | --max-runs K) --out DIR
        [--objective fraction|loss] [--accounting ...]: the runs that most shrink the interval of D*/T at the
        target per FLOP -> DIR/next.json and DIR/sweeps/<name>_next.yaml; prints the command that runs them
  collect --wandb ENTITY/PROJECT [--group G] --out FILE.jsonl  -> the results table from W&B
  collect --wandb-offline DIR --out FILE.jsonl                 -> the same from offline runs under DIR
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from . import atomic
from .errors import AnalysisError
from .heap import keep_freed_memory
from .io import DEFAULT_SELECTION, SELECTIONS, batch_tokens_of, domain_weights, load_results, select_rows
from .intervals import N_BOOTSTRAP
from .laws import LAWS


def _weighting(text: str):
    if text in ("equal", "mixture"):
        return text
    try:
        return {k: float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"domain weights: equal, mixture or d0=0.5,d1=0.5 (got {text!r})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description="Fit L(N, D, D') and choose the split.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(s, law_default):
        s.add_argument("results", help="sweep directory (results.jsonl) or a .jsonl/.csv/.parquet file")
        s.add_argument("--out", required=True, type=Path, help="output directory")
        s.add_argument("--law", default=law_default, help=f"auto or one of {', '.join(LAWS)}")
        s.add_argument("--selection", default=DEFAULT_SELECTION, choices=list(SELECTIONS),
                       help="rows the law is fitted on (default: %(default)s)")
        s.add_argument("--per-domain", action="store_true",
                       help="one coefficient (E, A, B, C) per domain, exponents shared (the default whenever the "
                            "data have more than one domain)")
        s.add_argument("--shared-coefficients", "--no-per-domain", action="store_true",
                       help="one set of coefficients for every domain (default: one per domain, exponents shared, "
                            "whenever the data have more than one domain)")
        s.add_argument("--n-bootstrap", type=int, default=N_BOOTSTRAP,
                       help="resamples of trained models (default %(default)s, as the end-of-sweep report's)")
        s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
        s.add_argument("--quiet", action="store_true", help="no progress messages")

    def question(s):
        s.add_argument("--n-params", type=float, help="model size N")
        s.add_argument("--budget-tokens", type=float, help="budget T in tokens (see --accounting)")
        s.add_argument("--accounting", default=None, choices=["per-path", "shared-seed"],
                       help="per-path: D + D' = T; shared-seed: D + K*D' = T with K experts (default: the "
                            "accounting the rows record in their accounting column, per-path without one)")
        s.add_argument("--weights", type=_weighting, default="equal",
                       help="domain weights of the averaged loss: equal, mixture or d0=0.4,d1=0.6")
        s.add_argument("--batch-tokens", type=int, help="tokens per optimizer step (else the batch_tokens column)")

    f = sub.add_parser("fit", help="fit one law (or auto) and write fit.json")
    common(f, "auto")
    s = sub.add_parser("split", help="choose D* for a model size and budget; write split.json")
    common(s, "auto")
    question(s)
    s.add_argument("--compute-flops", type=float, help="compute budget C: N is chosen too (T = C / 6N)")
    s.add_argument("--extrapolate", action="store_true",
                   help="search D*/T over all fractions [0, 1], not only the measured ones (the result then "
                        "warns when D*/T lies outside the measured fractions)")
    s.add_argument("--coverage", action="store_true",
                   help="also check the 80%% prediction intervals on the held-out runs (refits each held-out "
                        "split with a bootstrap) and write their coverage into split.json")
    r = sub.add_parser("report", help="write the splitting report")
    common(r, "auto")
    question(r)
    r.add_argument("--extrapolate", action="store_true",
                   help="search D*/T over all fractions [0, 1], not only the measured ones (the report says so)")
    r.add_argument("--coverage-bootstrap", type=int, default=3,
                   help="bootstrap resamples of each held-out refit of the 80%% prediction-interval coverage check "
                        "(default %(default)s; 0 skips the check)")
    r.add_argument("--wandb", action="store_true", help="also log the report to W&B (an analysis run)")
    r.add_argument("--wandb-project", default="splitsweep")
    r.add_argument("--wandb-entity")
    r.add_argument("--wandb-group", help="W&B group (default: the sweep's name)")
    r.add_argument("--wandb-mode", default="offline", choices=["offline", "online", "disabled"])
    n = sub.add_parser("next", help="propose the runs that most shrink the split's interval per FLOP; write "
                                    "next.json and a sweep file")
    common(n, "auto")
    n.add_argument("--target-n-params", type=float, required=True, help="model size N of the decision")
    n.add_argument("--target-budget-tokens", type=float, required=True, help="its budget (see --accounting)")
    n.add_argument("--accounting", default=None, choices=["per-path", "shared-seed"],
                   help="default: the accounting the rows record")
    cost = n.add_mutually_exclusive_group(required=True)
    cost.add_argument("--compute-budget", type=float, metavar="FLOPS", help="training compute to spend (6·N·tokens)")
    cost.add_argument("--max-runs", type=int, metavar="K", help="number of runs to propose")
    n.add_argument("--objective", default="fraction", choices=["fraction", "loss"],
                   help="shrink the interval of D*/T (default) or the prediction interval of the target's loss")
    n.add_argument("--weights", type=_weighting, default="equal", help="domain weights (as split)")
    n.add_argument("--batch-tokens", type=int, help="tokens per optimizer step (else the batch_tokens column)")
    n.add_argument("--name", help="the sweep file's name stem (default: the rows' sweep)")
    c = sub.add_parser("collect", help="collect the results table from W&B")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--wandb", metavar="ENTITY/PROJECT", help="online: the W&B API")
    src.add_argument("--wandb-offline", metavar="DIR", type=Path, help="offline run directories under DIR")
    c.add_argument("--group", help="W&B run group (one sweep)")
    c.add_argument("--out", required=True, type=Path, help="output .jsonl file")
    return p


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _print_warning(message, category, filename, lineno, file=None, line=None):
    # A warning about the input (e.g. a torn last line skipped) is for the user, like an error: one line.
    print(f"warning: {_one_line(message)}", file=sys.stderr)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    keep_freed_memory()
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        try:
            return _run(args)
        except AnalysisError as e:
            # Bad input is one line on stderr and exit code 2, never a traceback.
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return 2


def _run(args) -> int:
    if args.command == "collect":
        from .wandb_io import collect_wandb, collect_wandb_offline
        table = (collect_wandb_offline(args.wandb_offline) if args.wandb_offline is not None
                 else collect_wandb(args.wandb, args.group))
        load_results(table)  # validate before writing
        # json.dumps keeps every float exactly (pandas' to_json rounds to 10 digits).
        import json
        clean = table.astype(object).where(table.notna(), None)
        atomic.write_text(args.out, "".join(json.dumps(r) + "\n" for r in clean.to_dict("records")))
        print(args.out)
        return 0
    per_domain = _per_domain(args)
    if args.command == "report":
        from .report import build_report
        path = build_report(args.results, args.out, budget_tokens=args.budget_tokens, law=args.law,
                            n_bootstrap=args.n_bootstrap, accounting=args.accounting, n_params=args.n_params,
                            selection=args.selection, per_domain=per_domain, weighting=args.weights,
                            batch_tokens=args.batch_tokens, seed=args.seed, progress=not args.quiet,
                            extrapolate=args.extrapolate, coverage_bootstrap=args.coverage_bootstrap)
        print(path)
        if args.wandb:
            from .wandb_log import log_report
            sweep_dir = Path(args.results) if Path(args.results).is_dir() else None  # beside the sweep's runs
            logged = log_report(args.out, load_results(args.results), project=args.wandb_project,
                                entity=args.wandb_entity, group=args.wandb_group, mode=args.wandb_mode,
                                wandb_dir=sweep_dir)
            print(f"W&B analysis run {logged['run_id']} ({args.wandb_mode}) in {logged['dir']}")
        return 0

    from .pipeline import analyze
    table = load_results(args.results)
    rows = select_rows(table, args.selection)
    if args.command == "next":
        from .next_runs import check_request, write_next
        check_request(rows, args.target_n_params, args.target_budget_tokens, args.compute_budget, args.max_runs,
                      args.objective)
        result = _analyze_for_split(analyze, rows, args, per_domain)
        out = write_next(result.split_fit, table, result.rows_for(), args)
        for w in out.get("warnings", []):
            print(f"warning: {_one_line(w)}", file=sys.stderr)
        print(out["command"])
        return 0
    if args.command == "split":
        from .report import sweep_accounting
        from .split import check_budget, choose_model_size, choose_split
        batch = batch_tokens_of(table, args.batch_tokens)
        sweep = sweep_accounting(table, args.accounting)
        accounting = sweep["accounting"]
        k = sweep["k"] if accounting == "shared-seed" else rows["eval_domain"].nunique()
        if args.compute_flops is None:
            if args.n_params is None or args.budget_tokens is None:
                raise AnalysisError("split needs --n-params and --budget-tokens (or --compute-flops)")
            check_budget(args.budget_tokens, batch, accounting, k)
        result = analyze(rows, args.law, per_domain=per_domain, n_bootstrap=args.n_bootstrap, seed=args.seed,
                         validate=args.law == "auto", progress=not args.quiet)
        rows = result.rows_for()  # the split law's rows (law_domain: without the rows outside its domain)
        mix = domain_weights(rows)
        if args.compute_flops is not None:
            n_lo, n_hi = rows["n_params"].min(), rows["n_params"].max()
            out = choose_model_size(result.split_fit, args.compute_flops, (n_lo / 10, n_hi * 100),
                                    accounting=accounting, mixture_weights=mix, weighting=args.weights,
                                    batch_tokens=batch, rows=rows, extrapolate=args.extrapolate)
        else:
            out = choose_split(result.split_fit, args.n_params, args.budget_tokens, accounting=accounting,
                               mixture_weights=mix, weighting=args.weights, batch_tokens=batch, rows=rows,
                               extrapolate=args.extrapolate, seed=args.seed)
        out["law_chosen_because"] = result.split_why or result.why
        out["accounting_source"] = sweep["source"]
        out["row_selection"] = args.selection
        if args.coverage:
            from .intervals import LEVEL, coverage_sentence, heldout_coverage
            fit = result.split_fit  # the held-out refits use its layout (per-domain coefficients or not)
            cov = heldout_coverage(rows, fit.law, per_domain=fit.layout.per_domain, level=LEVEL,
                                   n_bootstrap=max(args.n_bootstrap, 2), seed=args.seed, progress=not args.quiet)
            out["heldout_coverage"] = {"level": LEVEL, "checks": cov, "statement": coverage_sentence(cov, LEVEL)}
        for w in out.get("warnings", []):
            print(f"warning: {_one_line(w)}", file=sys.stderr)
        path = atomic.write_json(args.out / "split.json", out)
    else:
        result = analyze(rows, args.law, per_domain=per_domain, n_bootstrap=args.n_bootstrap, seed=args.seed,
                         progress=not args.quiet)
        out = result.fit_json()
        if args.law == "auto":
            out["all_laws"] = {k: result.fit_json(k) for k in result.fits}
            out["not_fitted"] = result.failures
        path = atomic.write_json(args.out / "fit.json", out)
        _print_diagnostics(result, args.law == "auto")
    print(path)
    return 0


def _analyze_for_split(analyze, rows, args, per_domain):
    """analyze for a verb that uses only the split law (`next`).

    With --law auto the split-blind laws (chinchilla, with its 4,500 starts about a third of the fitting) are
    not fitted when each has fewer free parameters than every split-aware law: the split law is then the same
    pick among the split-aware laws with or without them (pipeline._choose). A split-blind pick hands the
    split to pick_law over the split-aware laws; a split-aware pick means no split-blind law is within the tie
    of the lowest error (with the fewest parameters it would have won the tie), so leaving them out changes
    neither the lowest error nor the tie. When no split-aware law can be fitted, every law is, as before."""
    kw = dict(per_domain=per_domain, n_bootstrap=args.n_bootstrap, seed=args.seed, validate=args.law == "auto",
              progress=not args.quiet)
    if args.law == "auto":
        from .pipeline import points_needed
        sizes = {}
        for name, law in LAWS.items():
            try:
                sizes[name] = points_needed(rows, law, per_domain)[0]
            except AnalysisError:
                continue  # a law this grid cannot hold: fit_law says why
        aware = [k for k in sizes if LAWS[k].split_aware]
        blind = [k for k in sizes if not LAWS[k].split_aware]
        if aware and all(sizes[b] < min(sizes[a] for a in aware) for b in blind):
            try:
                result = analyze(rows, args.law, laws=aware, **kw)
                result.split_fit  # raises when none could be fitted
                return result
            except AnalysisError:
                pass
    return analyze(rows, args.law, **kw)


def _per_domain(args):
    """--per-domain True, --shared-coefficients False, neither None: per-domain coefficients whenever the data
    have more than one domain (analyze's default)."""
    if getattr(args, "per_domain", False) and getattr(args, "shared_coefficients", False):
        raise AnalysisError("--per-domain and --shared-coefficients contradict each other: give one")
    return True if getattr(args, "per_domain", False) else False if getattr(args, "shared_coefficients", False) \
        else None


def _print_diagnostics(result, auto: bool) -> None:
    """The chosen fit's identifiability warnings, one line each on stderr (like input warnings: for the
    user, even with --quiet); with auto, which other laws the grid does not identify."""
    fit = result.fit
    for w in fit.diagnostics["warnings"]:
        print(f"warning: {fit.law.name}: {_one_line(w)}", file=sys.stderr)
    if auto:
        from .diagnostics import short
        others = [f"{k} ({short(f.diagnostics)})" for k, f in result.fits.items()
                  if k != result.chosen and not f.diagnostics["identified"]]
        if others:
            print(f"warning: not identified by this grid: {'; '.join(others)} (fit.json all_laws.*.diagnostics)",
                  file=sys.stderr)


def console_main() -> None:
    """The `splitsweep-analysis` command."""
    sys.exit(main())
