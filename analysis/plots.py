"""The report's figures, each returned as PNG bytes (written or embedded by report.py)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on the cluster or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import MIXTURE  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


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


def measured_split_curves(df: pd.DataFrame, metric: str) -> bytes | None:
    """metric against D/(D+D') per (N, D+D'): each expert on its own domain (solid) vs the mixture
    baseline on that domain (dashed, a horizontal line when the baseline was trained at one split)."""
    if metric not in df.columns or df[metric].notna().sum() == 0:
        return None
    groups = sorted(df.groupby(["n_params", "budget_tokens"]).groups)
    if len(groups) > 9:  # keep the figure readable: the extreme and middle groups
        groups = [groups[i] for i in np.unique(np.linspace(0, len(groups) - 1, 9).round().astype(int))]
    fig, axes = _grid(len(groups))
    domains = sorted(d for d in df["eval_domain"].unique() if d != MIXTURE)
    for ax, (n, t) in zip(axes, groups):
        g = df[(df["n_params"] == n) & (df["budget_tokens"] == t)]
        for i, dom in enumerate(domains):
            c = COLORS[i % len(COLORS)]
            own = g[(g["expert_domain"] == dom) & (g["eval_domain"] == dom)].sort_values("pretrain_fraction")
            base = g[(g["expert_domain"] == MIXTURE) & (g["eval_domain"] == dom)].sort_values("pretrain_fraction")
            if len(own):
                m = own.groupby("pretrain_fraction")[metric].mean()
                ax.plot(m.index, m.values, "o-", color=c, label=f"{dom} expert")
            if len(base):
                m = base.groupby("pretrain_fraction")[metric].mean()
                if len(m) == 1:
                    ax.axhline(m.iloc[0], color=c, ls="--", lw=1, label=f"mixture on {dom}")
                else:
                    ax.plot(m.index, m.values, "s--", color=c, lw=1, label=f"mixture on {dom}")
        ax.set_title(f"N={n:.3g}, D+D'={t:.3g}", fontsize=9)
        ax.set_xlabel("pretrain fraction D/(D+D')")
        ax.set_ylabel(metric)
        ax.set_xlim(-0.03, 1.03)
    axes[0].legend(fontsize=7)
    return _png(fig)


def measured_vs_predicted(df: pd.DataFrame, predictions: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 5))
    y = df["eval_loss"].to_numpy()
    for i, (name, pred) in enumerate(predictions.items()):
        ax.scatter(y, pred, s=10, alpha=0.6, color=COLORS[i % len(COLORS)], label=name)
    lo, hi = y.min() * 0.97, y.max() * 1.03
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel("measured loss")
    ax.set_ylabel("predicted loss")
    ax.legend(fontsize=8)
    return _png(fig)


def loss_vs_special(df: pd.DataFrame, fit, predict_avg) -> bytes:
    """Domain-averaged own-domain loss against D' for each (N, D), with the fitted law's curves."""
    own = df[df["expert_domain"] == df["eval_domain"]]
    if len(own) == 0:
        own = df
    ns = sorted(own["n_params"].unique())
    if len(ns) > 6:
        ns = [ns[i] for i in np.unique(np.linspace(0, len(ns) - 1, 6).round().astype(int))]
    fig, axes = _grid(len(ns))
    for ax, n in zip(axes, ns):
        g = own[own["n_params"] == n]
        ds = sorted(g["pretrain_tokens"].unique())
        for i, d in enumerate(ds[:8]):
            c = COLORS[i % len(COLORS)]
            m = g[g["pretrain_tokens"] == d].groupby("special_tokens")["eval_loss"].mean()
            x = np.maximum(m.index.to_numpy(), 1.0)
            ax.plot(x, m.values, "o", color=c, ms=4, label=f"D={d:.3g}")
            grid = np.geomspace(max(x.min(), 1.0), max(x.max(), 10.0), 50)
            ax.plot(grid, predict_avg(n, d, grid), "-", color=c, lw=1)
        ax.set_xscale("log")
        ax.set_title(f"N={n:.3g}", fontsize=9)
        ax.set_xlabel("D' (specialization tokens)")
        ax.set_ylabel("own-domain loss (domain mean)")
        ax.legend(fontsize=6)
    fig.suptitle(f"lines: {fit.law.name}", fontsize=9)
    return _png(fig)


def heldout_plot(tables: dict) -> bytes | None:
    """Measured against predicted for the held-out rows of each law and check."""
    tables = {k: v for k, v in tables.items() if v is not None and len(v)}
    if not tables:
        return None
    fig, axes = _grid(len(tables), 4, 4)
    for ax, (name, t) in zip(axes, tables.items()):
        for i, (check, g) in enumerate(t.groupby("check")):
            err = np.mean(np.abs(g["predicted_loss"] - g["eval_loss"]) / g["eval_loss"])
            ax.scatter(g["eval_loss"], g["predicted_loss"], s=10, color=COLORS[i % len(COLORS)],
                       label=f"{check}: {err:.2%}")
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


def split_curve_plot(fractions, losses: dict, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, (name, y) in enumerate(losses.items()):
        ax.plot(fractions, y, "-", color=COLORS[i % len(COLORS)], label=name)
        j = int(np.argmin(y))
        ax.plot(fractions[j], y[j], "o", color=COLORS[i % len(COLORS)])
    ax.axvline(0.8, color="grey", ls=":", lw=1, label="80/20")
    ax.set_xlabel("pretrain fraction D/T")
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
