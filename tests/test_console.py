"""The line a sweep prints per finished grid point, and its ETA."""
from splitsweep.console import point_line
from tests.helpers import TINY, run_cli


def test_point_line_names_the_point_its_own_loss_and_the_eta():
    rows = [{"eval_domain": d, "eval_loss": loss, "expert_domain": "d2", "recall_accuracy": rec, "model": "llama_201k",
             "pretrain_tokens": 409600, "budget_tokens": 1024000}
            for d, loss, rec in (("d0", 1.9, 0.1), ("d2", 0.315, 1.0), ("mixture", 1.2, None))]
    assert point_line(12, 30, rows, 41.2, False, 190) == \
        "[12/30] llama_201k d2 D/C=0.40 loss 0.3150 recall 1.00 (41 s) · ETA 3 min"
    baseline = [dict(r, expert_domain="mixture") for r in rows]
    assert "mixture D/C=0.40 loss 1.2000 (0.5 s)" in point_line(1, 2, baseline, 0.5, False, None)
    assert point_line(30, 30, rows, 0.1, True, 5).endswith("(already recorded)")  # no ETA after the last
    assert point_line(3, 30, None, 7200, False, 4000) == "[3/30] failed (2.0 h) · ETA 67 min"


def test_a_sweep_prints_a_line_per_grid_point_and_knows_what_is_recorded(tmp_path):
    args = ["-m", *TINY, "split.budget_tokens=1024", "split.pretrain_fraction=0.25", "split.expert_domain=d0,mixture",
            "report.enabled=false", "logger.mode=disabled"]
    first = run_cli(tmp_path, *args).stdout
    assert "splitsweep: [1/2] llama_27k d0 D/C=0.25 loss " in first and "· ETA" in first
    assert "splitsweep: [2/2] llama_27k mixture D/C=0.25 loss " in first
    again = run_cli(tmp_path, *args).stdout
    assert again.count("(already recorded)") == 2
