"""What a sweep prints as it goes: one line per finished grid point, with the sweep's ETA."""
from __future__ import annotations


def _duration(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def point_line(done: int, total: int, rows: list[dict] | None, seconds: float, recorded: bool,
               eta_s: float | None) -> str:
    """`[12/30] llama_201k d2 D/C=0.40 loss 0.3150 recall 1.00 (41 s) · ETA 3 min` from a job's summary rows
    (`splitsweep.app.task`'s return value; None when the job failed)."""
    head = f"[{done}/{total}]"
    eta = f" · ETA {_duration(eta_s)}" if eta_s is not None and done < total else ""
    if not rows:
        return f"{head} failed ({_duration(seconds)}){eta}"
    expert = rows[0].get("expert_domain", "?")
    own = next((r for r in rows if r.get("eval_domain") == expert), None) or \
        next((r for r in rows if r.get("eval_domain") == "mixture"), rows[0])
    budget = rows[0].get("budget_tokens") or 0
    split = f" D/C={rows[0]['pretrain_tokens'] / budget:.2f}" if budget and "pretrain_tokens" in rows[0] else ""
    recall = own.get("recall_accuracy")
    text = (f"{head} {rows[0].get('model', '')} {expert}{split} loss {own['eval_loss']:.4f}"
            + (f" recall {recall:.2f}" if isinstance(recall, (int, float)) else "")
            + (" (already recorded)" if recorded else f" ({_duration(seconds)})"))
    return text + eta
