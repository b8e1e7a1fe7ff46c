"""The report renders with every section, on a full sweep and on a phonebook-shaped table; the CLI
writes fit.json / split.json; nothing is written half; W&B collection up to the API boundary."""
import sys
import json

import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis import atomic
from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.laws import LAWS
from analysis.io import load_results
from analysis.report import SECTIONS, build_report, sweep_flops
from analysis.synthetic import TRUE_PARAMS, make_sweep, phonebook_table

SMALL = dict(n_values=(1e6, 4e6, 16e6), tokens_per_param=(10, 40), fractions=(0, 0.3, 0.6, 1))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    t = make_sweep(LAWS["two_source"], TRUE_PARAMS["two_source"], seed=3, **SMALL)
    (d / "results.jsonl").write_text(t.to_json(orient="records", lines=True))
    return d


def check_report(out, figures):
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for title in SECTIONS:
        assert f"## {title}\n" in md, title
        assert f"<h2>{title.replace(chr(39), '&#x27;')}</h2>" in html, title
    for name in figures:
        assert (out / name).stat().st_size > 1000, name
        assert f"]({name})" in md
    # self-contained: every image is embedded, nothing is linked
    assert html.count("src='data:image/png;base64,") == md.count("![")
    assert "src='http" not in html and ".png'" not in html
    assert not list(out.glob(".*.tmp"))
    return md


def test_report_on_a_sweep_dir(sweep_dir, tmp_path):
    path = build_report(sweep_dir, tmp_path / "rep", n_bootstrap=8, progress=False)
    assert path == tmp_path / "rep" / "report.md"
    md = check_report(tmp_path / "rep", ["measured_loss.png", "measured_vs_predicted.png", "loss_vs_special.png",
                                         "heldout.png", "split_curve.png", "fraction_vs_budget.png",
                                         "fraction_vs_n.png"])
    assert "pretrain for D* =" in md.split("## Data")[0]  # the recommendation, in one sentence, at the top
    fit = json.loads((tmp_path / "rep" / "fit.json").read_text())
    assert {"law", "params", "stderr", "objective", "n_points", "heldout", "row_selection"} <= set(fit)
    assert fit["row_selection"] == "own+baseline"
    split = json.loads((tmp_path / "rep" / "split.json").read_text())
    assert {"law", "pretrain_fraction", "pretrain_fraction_ci", "pretrain_tokens", "special_tokens",
            "predicted_loss", "full_pretrain_loss"} <= set(split)
    # What to run next: a tenth of the sweep's compute, the runs, their cost and the interval expected after
    nxt = json.loads((tmp_path / "rep" / "next.json").read_text())
    section = md.split("## What to run next")[1].split("\n## ")[0]
    assert nxt["runs"] and 0 < nxt["cost_flops"] <= 0.1 * sweep_flops(load_results(sweep_dir)) * (1 + 1e-9)
    assert f"on {len(nxt['runs'])} runs" in section and "| N | model | D | D' |" in section
    lo, hi = nxt["expected_interval"]
    assert f"to {lo:.3f}–{hi:.3f}" in section and "python -m analysis next" in section


def test_report_on_a_phonebook_table(tmp_path):
    """One N, one budget, fractions 0..1, 4 domains + mixture, recall_accuracy."""
    out = tmp_path / "pb"
    build_report(phonebook_table(), out, n_bootstrap=4, progress=False)
    md = check_report(out, ["measured_loss.png", "measured_recall.png"])
    assert "folded into E" in md
    assert "one model size in the data" in md and "one budget D + D' in the data" in md
    assert "fold" in md  # the k-fold interpolation check stands in for extrapolation
    assert "Measured best split per (N, D+D')" in md


def test_bad_budget_writes_nothing(sweep_dir, tmp_path):
    out = tmp_path / "none"
    with pytest.raises(AnalysisError, match="smaller than one batch"):
        build_report(sweep_dir, out, budget_tokens=1000, batch_tokens=4096, progress=False)
    assert not out.exists() or not any(out.iterdir())


def test_atomic_write_leaves_old_file_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "fit.json"
    atomic.write_json(target, {"law": "old"})

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic.write_json(target, {"law": "new"})
    assert json.loads(target.read_text()) == {"law": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["fit.json"]


def test_cli_fit_and_split(sweep_dir, tmp_path, capsys):
    assert main(["fit", str(sweep_dir), "--law", "two_source", "--out", str(tmp_path), "--quiet"]) == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    # per-domain coefficients by default (several domains): E[d0], A[d0], ... beside the shared exponents
    assert fit["law"] == "two_source" and {k.split("[")[0] for k in fit["params"]} == set(LAWS["two_source"].names)
    assert fit["per_domain_coefficients"] and "E[d0]" in fit["params"]
    assert "largest_N" in fit["heldout"]
    assert main(["split", str(sweep_dir), "--n-params", "4e6", "--budget-tokens", "8e7", "--law", "two_source",
                 "--n-bootstrap", "5", "--accounting", "shared-seed", "--out", str(tmp_path), "--quiet"]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["accounting"] == "shared-seed" and split["k_experts"] == 4
    lo, hi = split["pretrain_fraction_ci"]
    assert lo <= split["pretrain_fraction"] <= hi
    assert split["pretrain_tokens"] + 4 * split["special_tokens"] == pytest.approx(8e7)
    # errors are one clear line and exit code 2, no traceback
    assert main(["split", str(sweep_dir), "--n-params", "4e6", "--budget-tokens", "100", "--batch-tokens", "512",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "smaller than one batch" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


class FakeRun:
    def __init__(self, rows, state="finished"):
        self.summary, self.config, self.id, self.state = {"results": rows}, {}, "r", state


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return self._runs


def test_collect_wandb_through_the_api(sweep_dir, tmp_path, monkeypatch):
    from analysis.wandb_io import collect_wandb
    rows = [json.loads(x) for x in (sweep_dir / "results.jsonl").read_text().splitlines()]
    api = FakeApi([FakeRun(rows[:10]), FakeRun(rows[10:])])
    table = collect_wandb("me/proj", "sweep-1", api=api)
    assert len(table) == len(rows) and api.calls == [("me/proj", {"group": "sweep-1"})]
    # the CLI path: wandb.Api is the boundary
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setattr(wandb, "Api", lambda timeout=None: api)
    assert main(["collect", "--wandb", "me/proj", "--group", "sweep-1", "--out", str(tmp_path / "r.jsonl")]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == len(rows)


def test_collect_wandb_without_key_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert main(["collect", "--wandb", "me/proj", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "no W&B API key" in capsys.readouterr().err
    with pytest.raises(AnalysisError, match="entity/project"):
        from analysis.wandb_io import collect_wandb
        collect_wandb("just-a-name", api=FakeApi([]))
