"""The report's figures, each returned as PNG bytes (written or embedded by report.py).

Measured points carry error bars where the rows have a standard error (column eval_loss_se; a point that
averages several rows gets sqrt(sum se^2) / n), and none otherwise. D' = 0 (pretraining only, or the seed
itself) cannot sit on a log axis: the D' axis is symlog (linear below the smallest positive D'), and the
D' = 0 points are drawn with their own marker and label, never dropped or moved to D' = 1.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on the cluster or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .roles import BASELINE, MIXTURE, OWN, role  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
SE = "eval_loss_se"  # standard error of eval_loss, where the rows have one


def has_se(df: pd.DataFrame, metric: str = "eval_loss") -> bool:
    return metric == "eval_loss" and SE in df.columns and pd.to_numeric(df[SE], errors="coerce").notna().any()


def mean_and_se(g: pd.DataFrame, by, metric: str = "eval_loss"):
    """(mean of metric per group, its standard error per group or None): the se of a mean of n rows is
    sqrt(sum se^2) / n, from the rows' own standard errors (eval_loss_se), only where they have them."""
    m = g.groupby(by)[metric].mean()
    if not has_se(g, metric):
        return m, None
    se = pd.to_numeric(g[SE], errors="coerce")
    keys = g[by] if isinstance(by, str) else [g[b] for b in by]
    err = (se ** 2).groupby(keys).sum() ** 0.5 / se.groupby(keys).size()
    err[se.isna().groupby(keys).any()] = np.nan  # a row without its se: the mean's se is unknown
    return m, err.reindex(m.index).to_numpy(float)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, width=4.2, height=3.2):
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def measured_split_curves(df: pd.DataFrame, metric: str, fraction_label: str = "D/(D+D')",
                          budget_label: str = "D+D'") -> bytes | None:
    """metric against the pretrain fraction per (N, budget): each expert on its own domain (solid) vs the
    mixture baseline on that domain (dashed, a horizontal line when the baseline was trained at one split).
    df's budget_tokens and pretrain_fraction columns are read in the sweep's accounting (report.py passes
    C and D/C for a shared-seed sweep); error bars where the rows have eval_loss_se."""
    if metric not in df.columns or df[metric].notna().sum() == 0:
        return None
    groups = sorted(df.groupby(["n_params", "budget_tokens"]).groups)
    if len(groups) > 9:  # keep the figure readable: the extreme and middle groups
        groups = [groups[i] for i in np.unique(np.linspace(0, len(groups) - 1, 9).round().astype(int))]
    fig, axes = _grid(len(groups))
    domains = sorted(d for d in df["eval_domain"].unique() if d != MIXTURE)
    for ax, (n, t) in zip(axes, groups):
        g = df[(df["n_params"] == n) & (df["budget_tokens"] == t)]
        roles = role(g)
        for i, dom in enumerate(domains):
            c = COLORS[i % len(COLORS)]
            own = g[(roles == OWN) & (g["eval_domain"] == dom)].sort_values("pretrain_fraction")
            base = g[(roles == BASELINE) & (g["eval_domain"] == dom)].sort_values("pretrain_fraction")
            if len(own):
                m, err = mean_and_se(own, "pretrain_fraction", metric)
                ax.errorbar(m.index, m.values, yerr=err, fmt="o-", color=c, capsize=2, label=f"{dom} expert")
            if len(base):
                m, err = mean_and_se(base, "pretrain_fraction", metric)
                if len(m) == 1:
                    ax.axhline(m.iloc[0], color=c, ls="--", lw=1, label=f"mixture on {dom}")
                    if err is not None and np.isfinite(err[0]):
                        ax.axhspan(m.iloc[0] - err[0], m.iloc[0] + err[0], color=c, alpha=0.1, lw=0)
                else:
                    ax.errorbar(m.index, m.values, yerr=err, fmt="s--", color=c, lw=1, capsize=2,
                                label=f"mixture on {dom}")
        ax.set_title(f"N={n:.3g}, {budget_label}={t:.3g}", fontsize=9)
        ax.set_xlabel(f"pretrain fraction {fraction_label}")
        ax.set_ylabel(metric)
        ax.set_xlim(-0.03, 1.03)
    axes[0].legend(fontsize=7)
    return _png(fig)


def measured_vs_predicted(df: pd.DataFrame, predictions: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 5))
    y = df["eval_loss"].to_numpy()
    xerr = pd.to_numeric(df[SE], errors="coerce").to_numpy(float) if has_se(df) else None
    for i, (name, pred) in enumerate(predictions.items()):
        ax.scatter(y, pred, s=10, alpha=0.6, color=COLORS[i % len(COLORS)], label=name)
        if xerr is not None:
            ax.errorbar(y, pred, xerr=xerr, fmt="none", ecolor=COLORS[i % len(COLORS)], alpha=0.4, lw=0.8)
    lo, hi = y.min() * 0.97, y.max() * 1.03
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel("measured loss")
    ax.set_ylabel("predicted loss")
    ax.legend(fontsize=8)
    return _png(fig)


def special_points(df: pd.DataFrame) -> pd.DataFrame:
    """The points of loss_vs_special: the domain-mean loss of each (N, D, D'), with its standard error
    (NaN without eval_loss_se). Experts on their own domain for D' > 0; for D' = 0 every model of that
    (N, D) with D' = 0 on the individual domains (the seed itself: pretraining only, or an expert with no
    expert phase) - D' = 0 rows are kept, never dropped."""
    dom = df[df["eval_domain"] != MIXTURE] if (df["eval_domain"] != MIXTURE).any() else df
    own = dom[role(dom, baseline_on_mixture=OWN) == OWN]  # the baseline's, with only whole-mixture evals
    if len(own) == 0:
        own = dom
    keep = pd.concat([own[own["special_tokens"] > 0], dom[dom["special_tokens"] == 0]])
    if len(keep) == 0:
        return pd.DataFrame(columns=["n_params", "pretrain_tokens", "special_tokens", "eval_loss", "se"])
    m, err = mean_and_se(keep, ["n_params", "pretrain_tokens", "special_tokens"])
    out = m.reset_index()
    out["se"] = np.nan if err is None else err
    return out


def loss_vs_special_figure(df: pd.DataFrame, fit, predict_avg):
    """The figure of loss_vs_special (for tests: its axes show what is plotted)."""
    pts = special_points(df)
    ns = sorted(pts["n_params"].unique()) or [float("nan")]  # nan: an empty panel
    if len(ns) > 6:
        ns = [ns[i] for i in np.unique(np.linspace(0, len(ns) - 1, 6).round().astype(int))]
    fig, axes = _grid(len(ns))
    for ax, n in zip(axes, ns):
        g = pts[pts["n_params"] == n]
        positive = g.loc[g["special_tokens"] > 0, "special_tokens"]
        # symlog: linear in [0, linthresh] (the decade below the smallest positive D'), so that D' = 0 is drawn
        # where it is; log above
        linthresh = 10.0 ** np.floor(np.log10(positive.min())) if len(positive) else 1.0
        ds = sorted(g.loc[g["special_tokens"] > 0, "pretrain_tokens"].unique())
        if len(ds) > 8:  # readable: 8 seeds D spread over the range (every D' = 0 point is still drawn)
            ds = [ds[i] for i in np.unique(np.linspace(0, len(ds) - 1, 8).round().astype(int))]
        colors = {d: COLORS[i % len(COLORS)] for i, d in enumerate(ds)}
        for d in ds:
            h = g[(g["pretrain_tokens"] == d) & (g["special_tokens"] > 0)].sort_values("special_tokens")
            yerr = h["se"].to_numpy(float) if h["se"].notna().any() else None
            ax.errorbar(h["special_tokens"], h["eval_loss"], yerr=yerr, fmt="o", color=colors[d], ms=4, capsize=2,
                        label=f"D={d:.3g}")
            hi = float(h["special_tokens"].max())
            # from the seed itself (D' = 0) when there is one (D > 0; a model of no tokens has no loss to draw)
            grid = np.concatenate([np.linspace(0.0, linthresh, 8)[:-1] if d > 0 else [],
                                   np.geomspace(linthresh, max(hi, 10 * linthresh), 50)])
            ax.plot(grid, predict_avg(n, d, grid), "-", color=colors[d], lw=1)
        zero = g[g["special_tokens"] == 0]
        seen_other = False
        for _, z in zero.iterrows():
            d = z["pretrain_tokens"]
            other = d not in colors
            err = None if not np.isfinite(z["se"]) else [z["se"]]
            ax.errorbar([0.0], [z["eval_loss"]], yerr=err, fmt="s", ms=6, mfc="none", capsize=2,
                        color="k" if other else colors[d],
                        label=("D'=0 (pretraining only, D = D+D')" if other and not seen_other else
                               None if other else f"D={d:.3g}, D'=0"))
            seen_other = seen_other or other
        if len(zero):
            ax.axvline(0.0, color="grey", lw=0.6, ls=":")
        if len(g):  # the measured points set the scale; a curve may leave it (a seed of few tokens)
            y_lo, y_hi = float(g["eval_loss"].min()), float(g["eval_loss"].max())
            pad = 0.1 * (y_hi - y_lo) if y_hi > y_lo else 0.1 * abs(y_hi) or 1.0
            ax.set_ylim(y_lo - pad, y_hi + 2 * pad)
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        top = max(float(g["special_tokens"].max()), 10 * linthresh)
        ax.set_xticks([0.0] + [10.0 ** k for k in range(int(np.log10(linthresh)), int(np.ceil(np.log10(top))) + 1)])
        ax.minorticks_off()
        ax.set_xlim(-0.1 * linthresh, top * 1.5)
        ax.set_title(f"N={n:.3g}", fontsize=9)
        ax.set_xlabel("D' (symlog: linear below %.0e)" % linthresh, fontsize=8)
        ax.set_ylabel("own-domain loss (domain mean)")
        ax.legend(fontsize=6)
    fig.suptitle(f"lines: {fit.law.name}", fontsize=9, y=1.03)
    return fig


def loss_vs_special(df: pd.DataFrame, fit, predict_avg) -> bytes:
    """Domain-averaged own-domain loss against D' for each (N, D), with the fitted law's curves; D' = 0
    drawn at 0 on a symlog axis (open squares), error bars where the rows have eval_loss_se."""
    return _png(loss_vs_special_figure(df, fit, predict_avg))


def heldout_plot(tables: dict, checks=None) -> bytes | None:
    """Measured against predicted for the held-out rows of each law and check (only `checks`, when given)."""
    if checks is not None:
        tables = {k: v[v["check"].isin(checks)] for k, v in tables.items() if v is not None and len(v)}
    tables = {k: v for k, v in tables.items() if v is not None and len(v)}
    if not tables:
        return None
    fig, axes = _grid(len(tables), 4, 4)
    for ax, (name, t) in zip(axes, tables.items()):
        for i, (check, g) in enumerate(t.groupby("check")):
            err = np.mean(np.abs(g["predicted_loss"] - g["eval_loss"]) / g["eval_loss"])
            ax.scatter(g["eval_loss"], g["predicted_loss"], s=10, color=COLORS[i % len(COLORS)],
                       label=f"{check}: {err:.2%}")
            if has_se(g):
                ax.errorbar(g["eval_loss"], g["predicted_loss"], xerr=pd.to_numeric(g[SE], errors="coerce"),
                            fmt="none", ecolor=COLORS[i % len(COLORS)], alpha=0.4, lw=0.8)
        lo, hi = t["eval_loss"].min() * 0.97, t["eval_loss"].max() * 1.03
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("measured (held out)")
        ax.set_ylabel("predicted")
        ax.legend(fontsize=7)
    return _png(fig)


def fraction_plot(x, curve, xlabel: str, title: str) -> bytes:
    """Optimal pretrain fraction (with bootstrap band) and predicted gain over pretraining only."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(x, curve[:, 0], "o-")
    a1.fill_between(x, curve[:, 1], curve[:, 2], alpha=0.25, label="95% bootstrap")
    a1.set_xscale("log")
    a1.set_ylim(-0.02, 1.02)
    a1.set_xlabel(xlabel)
    a1.set_ylabel("optimal D/(D+D')")
    a1.legend(fontsize=8)
    a2.plot(x, 100 * curve[:, 3], "o-", color=COLORS[1])
    a2.set_xscale("log")
    a2.set_xlabel(xlabel)
    a2.set_ylabel("predicted gain over pretraining only (%)")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def split_curve_plot(fractions, losses: dict, title: str, measured=None, search=None,
                     fraction_label: str = "D/T") -> bytes:
    """Predicted loss against the pretrain fraction, each law (dot: its minimum); measured: the measured
    curve at the requested scale [(fraction, loss, se or None)], search: the measured range searched."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if search is not None and search[1] - search[0] < 1 - 1e-9:
        ax.axvspan(search[0], search[1], color="grey", alpha=0.12, lw=0, label="measured fractions")
    for i, (name, y) in enumerate(losses.items()):
        ax.plot(fractions, y, "-", color=COLORS[i % len(COLORS)], label=name)
        j = int(np.argmin(y))
        ax.plot(fractions[j], y[j], "o", color=COLORS[i % len(COLORS)])
    if measured:
        f, y, e = zip(*measured)
        err = None if all(v is None for v in e) else [np.nan if v is None else v for v in e]
        ax.errorbar(f, y, yerr=err, fmt="kx", ms=6, capsize=2, label="measured")
    ax.axvline(0.8, color="grey", ls=":", lw=1, label="80/20")
    ax.set_xlabel(f"pretrain fraction {fraction_label}")
    ax.set_ylabel("predicted loss (domain mean)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


def downstream_curves(df: pd.DataFrame) -> bytes | None:
    """Benchmark accuracy against the pretrain fraction (left) and against training FLOPs (right), one panel
    pair per task: each expert domain and the mixture baseline, with lm-eval's standard error as bars."""
    if df.empty:
        return None
    tasks = sorted(df["task"].unique())
    fig, axes = plt.subplots(len(tasks), 2, figsize=(9, 3.2 * len(tasks)), squeeze=False)
    for (ax_f, ax_c), task in zip(axes, tasks):
        g = df[df["task"] == task]
        for domain, s in g.groupby("expert_domain"):
            s = s.sort_values(["pretrain_fraction", "flops"])
            style = dict(ls="--", color="k") if domain == MIXTURE else dict(ls="-")
            err = s["stderr"].astype(float).fillna(0.0)
            ax_f.errorbar(s["pretrain_fraction"], s["value"], yerr=err, marker="o", ms=3, capsize=2,
                          label=str(domain), **style)
            ax_c.errorbar(s["flops"], s["value"], yerr=err, marker="o", ms=3, capsize=2, lw=0, elinewidth=1,
                          label=str(domain), **({"color": "k"} if domain == MIXTURE else {}))
        metric = g["metric"].iloc[0]
        ax_f.set(xlabel="pretrain fraction D/(D+D')", ylabel=f"{task} {metric}")
        ax_c.set(xlabel="training FLOPs (6N(D+D'))", xscale="log")
        ax_f.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
