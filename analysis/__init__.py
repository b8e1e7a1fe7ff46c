"""Fit L(N, D, D') to sweep results, choose the split point, write the splitting report.

Modules, one job each:
  errors     the one exception type bad input raises (AnalysisError)
  atomic     whole-or-nothing file writes (temp file + os.replace)
  io         read a results table (sweep dir, .jsonl/.csv/.parquet), validate it, select the fitted rows
  wandb_io   collect the same table from W&B runs (public API)
  inputs     the arrays a law consumes (N, D, D', role, mixture weight, domain)
  laws       the registry of candidate laws
  fit        multi-start fit with lmfit (vectorized prescreen + lmfit polish), bootstrap over runs
  validate   held-out checks and `--law auto`
  split      the optimal split D* for a budget
  plots      the report's figures
  report     report.md / report.html / fit.json / split.json
  cli        `python -m analysis fit|split|report|collect`
"""
