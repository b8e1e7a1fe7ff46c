"""Downstream evaluation through lm-evaluation-harness: the adapter, the phonebook MC task, records, errors."""
import json

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from splitsweep.data.phonebook import CharTokenizer
from splitsweep.downstream import DownstreamEval, read_downstream
from splitsweep.job import Job
from splitsweep.seed_store import seed_checkpoint
from splitsweep.lm_eval_adapter import SplitsweepLM, char_tokenizer
from splitsweep.model import ModelSpec, build_model
from splitsweep.plan import ConfigError, make_plan
from splitsweep.records import read_rows
from tests.helpers import compose_cfg

TINY_BOOK = ["model=llama_83k", "data.entries_per_domain=10", "split.budget_tokens=19200", "train.lr=3e-3",
             "train.checkpoint_every_steps=1000"]
SPEC = ModelSpec("t", 32, 2, 4, 4, 16)


@pytest.fixture(autouse=True)
def _no_lm_eval_machine_report(monkeypatch):
    """lm_eval.simple_evaluate adds a report of the machine to its results: torch's collect_env runs pip,
    nvidia-smi, lscpu... (seconds, and whatever those programs do on this machine). splitsweep records none
    of it (downstream rows take lm_eval's version from the package metadata), so the report is left out."""
    import lm_eval.evaluator

    monkeypatch.setattr(lm_eval.evaluator, "add_env_info",
                        lambda storage: storage.update(pretty_env_info="not collected in the tests"))


def _model(seq_len=32):
    tok = CharTokenizer()
    return build_model(SPEC, tok.vocab_size, seq_len, seed=0), char_tokenizer(tok)


def _req(kind, args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@torch.no_grad()
def _direct(model, ids, n_cont):
    x = torch.tensor(ids)[None]
    logp = F.log_softmax(model(x[:, :-1]).float(), -1)[0]
    targets = x[0, 1:]
    return float(logp[-n_cont:].gather(-1, targets[-n_cont:, None]).sum())


def test_adapter_matches_a_direct_computation():
    model, tok = _model()
    model.eval()
    pairs = [("\nmuha zev:", "666279"), ("\nab:", "1"), ("", "\nkaba"), ("\nviha nud:", "138835 and more"),
             ("\n" + "ab " * 20 + "d", "zuv")]  # the last is longer than the model's 32-token context
    want = []
    for ctx, cont in pairs:
        ids = tok.encode(ctx or "\n") if ctx else [tok.prefix_id]
        ids = ids + tok.encode(cont)
        ids = ids[-33:]
        want.append(_direct(model, ids, len(tok.encode(cont))))
    for batch_size in (1, 2, 8):  # right padding within a batch must not change anything
        lm = SplitsweepLM(model, tok, max_length=32, batch_size=batch_size)
        got = lm.loglikelihood([_req("loglikelihood", p) for p in pairs])
        assert [g[0] for g in got] == pytest.approx(want, abs=1e-4)
    # greedy flag: the argmax continuation is greedy, and its log-likelihood is the largest.
    lm = SplitsweepLM(model, tok, max_length=32, batch_size=4)
    (gen,) = lm.generate_until([_req("generate_until", ("\nmuha zev:", {"until": ["\n"], "max_gen_toks": 5}))])
    ids = tok.encode("\nmuha zev:")
    manual = []
    for _ in range(5):
        nxt = int(model(torch.tensor(ids)[None])[0, -1].argmax())
        if tok.decode([nxt]) == "\n":
            break
        ids.append(nxt)
        manual.append(nxt)
    assert gen == tok.decode(manual)
    if gen:
        ((_, greedy),) = lm.loglikelihood([_req("loglikelihood", ("\nmuha zev:", gen))])
        assert greedy
    # rolling: short text = one window conditioned on the prefix token; long text = disjoint windows.
    text = "\nmuha zev:666279"
    (roll,) = lm.loglikelihood_rolling([_req("loglikelihood_rolling", (text,))])
    assert roll == pytest.approx(_direct(model, [tok.prefix_id] + tok.encode(text), len(text)), abs=1e-4)
    long = "\nmuha zev:666279" * 5  # 80 characters, three windows of 32
    (roll_long,) = lm.loglikelihood_rolling([_req("loglikelihood_rolling", (long,))])
    ids = tok.encode(long)
    expect = _direct(model, [tok.prefix_id] + ids[:32], 32) + _direct(model, ids[31:64], 32) \
        + _direct(model, ids[47:80], 16)
    assert roll_long == pytest.approx(expect, abs=1e-3)


def test_phonebook_mc_end_to_end_records_and_reruns(tmp_path):
    # A d0 expert split at 40% memorises its 10 facts (tests/test_phonebook.py): far above the 25% chance.
    cfg = compose_cfg(tmp_path, *TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=d0",
                      "eval=phonebook_mc")
    job = Job(cfg)
    rows = job.run()
    sweep = tmp_path / "sweeps" / "test"
    down = read_downstream(sweep)
    assert {r["run_id"] for r in down} == {rows[0]["run_id"]}
    by = {(r["task"], r["metric"]): r for r in down}
    assert set(by) >= {(f"phonebook_mc_d{k}", m) for k in range(4) for m in ("acc", "acc_norm")} \
        | {("phonebook_mc", "acc")}
    own = by[("phonebook_mc_d0", "acc")]
    assert own["n_examples"] == 10 and own["stderr"] is not None and own["expert_domain"] == "d0"
    assert own["pretrain_tokens"] == 7680 and own["special_tokens"] == 11520 and own["n_params"] == 83280
    recall = next(r["recall_accuracy"] for r in rows if r["eval_domain"] == "d0")
    assert own["value"] >= 0.7, (own, recall)
    # Re-running a finished grid point does nothing: no duplicate rows.
    Job(cfg).run()
    assert len(read_downstream(sweep)) == len(down) and len(read_rows(sweep)) == len(rows)

    # The same model untrained: near chance on the 40 questions.
    plan = make_plan(cfg)
    untrained = build_model(plan.spec, plan.source.vocab_size, plan.batch.seq_len, seed=0)
    rows0 = DownstreamEval.prepare(cfg, plan).run(untrained, None, {"run_id": "untrained"})
    group = next(r for r in rows0 if r["task"] == "phonebook_mc" and r["metric"] == "acc")
    assert group["n_examples"] == 40 and group["value"] <= 0.45, group

    # A grid point recorded without eval gets its downstream rows from runs/<id>/final when eval is turned on.
    base = compose_cfg(tmp_path, *TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=mixture")
    mixture_rows = Job(base).run()
    assert not read_downstream(sweep, run_id=mixture_rows[0]["run_id"])
    Job(compose_cfg(tmp_path, *TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=mixture",
                    "eval=phonebook_mc")).run()
    added = read_downstream(sweep, run_id=mixture_rows[0]["run_id"])
    assert added and all(r["expert_domain"] == "mixture" for r in added)
    assert len(read_rows(sweep)) == 2 * len(rows)

    # Another evaluation of a recorded model (here: 1-shot instead of 0) is its own eval_id: it runs once,
    # from the final checkpoint, and the first one's rows stay.
    before = read_downstream(sweep, run_id=rows[0]["run_id"])
    for _ in range(2):
        Job(compose_cfg(tmp_path, *TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=d0",
                        "eval=phonebook_mc", "eval.num_fewshot=1")).run()
    after = read_downstream(sweep, run_id=rows[0]["run_id"])
    assert len({r["eval_id"] for r in before}) == 1 and len({r["eval_id"] for r in after}) == 2
    assert len(after) == 2 * len(before) and after[:len(before)] == before
    assert {r["num_fewshot"] for r in after[len(before):]} == {1}
    assert len(read_rows(sweep)) == 2 * len(rows)  # no training, no new results rows


def _refused(tmp_path, *overrides, match):
    cfg = compose_cfg(tmp_path, *TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=d0", *overrides)
    with pytest.raises(ConfigError, match=match):
        Job(cfg)
    assert not (tmp_path / "store" / "seeds").exists()  # refused before any training


def test_bad_eval_input_is_refused_before_compute(tmp_path, monkeypatch):
    import splitsweep.downstream as ds

    _refused(tmp_path, "eval=phonebook_mc", "eval.tasks=[arc_eazy]", match="unknown lm-eval task 'arc_eazy'.*arc_easy")
    _refused(tmp_path, "eval=phonebook_mc", "eval.batch_size=big", match="eval.batch_size='big' must be a whole number")
    # A standard task reads the hub: refused (offline) with the way to use a local copy.
    monkeypatch.setattr(ds, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    _refused(tmp_path, "eval=phonebook_mc", "eval.tasks=[arc_easy]", match="arc_easy.*hub.*local_datasets")
    # The same standard task pointed at a local copy (ARC's schema) loads offline; its text ("Question: ...")
    # cannot be spelled by the phonebook's character tokenizer: a clear tokenizer error.
    data = tmp_path / "arc_easy.jsonl"
    data.write_text(json.dumps({"id": "1", "question": "kaba lid", "answerKey": "A",
                                "choices": {"text": ["one", "two"], "label": ["A", "B"]}}) + "\n")
    _refused(tmp_path, "eval=phonebook_mc", "eval.tasks=[arc_easy]", "+eval.local_datasets.arc_easy.dataset_path=json",
             "+eval.local_datasets.arc_easy.dataset_name=null",
             f"+eval.local_datasets.arc_easy.dataset_kwargs.data_files.test={data}",
             match="arc_easy.*tokenizer.*alphabet")


FSDP_SCRIPT = '''
import json, sys
sys.path.insert(0, {repo!r})
from lm_eval.api.instance import Instance
from splitsweep.data.phonebook import CharTokenizer
from splitsweep.distributed import init_distributed, shard_model
from splitsweep.lm_eval_adapter import SplitsweepLM, char_tokenizer
from splitsweep.model import ModelSpec, build_model
env = init_distributed("cpu")
tok = CharTokenizer()
model = shard_model(build_model(ModelSpec("t", 32, 2, 4, 4, 16), tok.vocab_size, 32, 0), env)
lm = SplitsweepLM(model, char_tokenizer(tok), 32, env, batch_size=2)
pairs = [("\\nmuha zev:", "666279"), ("\\nab:", "1"), ("", "\\nkaba"), ("\\nviha nud:", "138835"), ("\\nab", "a")]
ll = lm.loglikelihood([Instance("loglikelihood", {{}}, p, 0) for p in pairs])
gen = lm.generate_until([Instance("generate_until", {{}}, ("\\nmuha", {{"until": [":"], "max_gen_toks": 2 + i}}), 0)
                         for i in range(3)])
roll = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {{}}, ("\\nmuha zev:666279" * 3,), 0)])
open(sys.argv[1] + f"_{{env.rank}}.json", "w").write(json.dumps({{"rank": env.rank, "ll": ll, "gen": gen, "roll": roll}}))
'''


def test_adapter_under_fsdp_matches_one_process(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    script = tmp_path / "fsdp_eval.py"
    script.write_text(FSDP_SCRIPT.format(repo=str(REPO)))
    out = {}
    for n, launcher in ((1, [sys.executable]),
                        (2, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        prefix = tmp_path / f"world{n}"
        # GLOO_SOCKET_IFNAME: both ranks are on this machine; gloo's guess from the host name may not be.
        proc = subprocess.run(launcher + [str(script), str(prefix)], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = [json.loads((tmp_path / f"world{n}_{r}.json").read_text()) for r in range(n)]
    (single,), pair = out[1], out[2]
    for r in pair:  # every rank returns the whole answer, equal to one process's
        assert r["gen"] == single["gen"]
        assert [x[1] for x in r["ll"]] == [x[1] for x in single["ll"]]
        assert [x[0] for x in r["ll"]] == pytest.approx([x[0] for x in single["ll"]], abs=1e-4)
        assert r["roll"] == pytest.approx(single["roll"], abs=1e-3)


def test_a_seed_job_does_not_depend_on_the_experts_eval_config(tmp_path):
    # A SLURM seed job (SeedTask) runs seed_store.seed_checkpoint: a task only the expert's evaluation needs
    # cannot fail the seed; the expert's own job still refuses it before training.
    args = [*TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=d0", "eval=phonebook_mc",
            "eval.tasks=[arc_eazy]"]
    seed = seed_checkpoint(compose_cfg(tmp_path, *args))
    assert seed is not None and seed.exists()
    with pytest.raises(ConfigError, match="arc_eazy"):
        Job(compose_cfg(tmp_path, *args))


def test_a_downstream_step_runs_on_its_own_from_the_config_that_planned_it(tmp_path):
    """DownstreamStep.run: the evaluation of a recorded run from its final model, once; a config that plans
    another evaluation (here 1-shot, not 2-shot) is refused before anything is evaluated."""
    from splitsweep.steps import StepMismatch

    args = (*TINY_BOOK, "split.pretrain_fraction=0.4", "split.expert_domain=d1")
    rows = Job(compose_cfg(tmp_path, *args)).run()  # recorded without eval
    sweep = tmp_path / "sweeps" / "test"
    cfg = compose_cfg(tmp_path, *args, "eval=phonebook_mc", "eval.num_fewshot=2")
    job = Job(cfg)
    step = job.downstream.step(rows[0]["run_id"])
    assert step.identity == job.downstream.eval_id(rows[0]["run_id"]) and not step.done(sweep)
    with pytest.raises(StepMismatch):
        step.run(compose_cfg(tmp_path, *args, "eval=phonebook_mc", "eval.num_fewshot=1"))
    assert not read_downstream(sweep)
    added = step.run(cfg)
    assert added and step.done(sweep) and {r["num_fewshot"] for r in added} == {2}
    assert read_downstream(sweep) == added and step.run(cfg) == []  # done: not evaluated again
    assert len(read_rows(sweep)) == len(rows)
