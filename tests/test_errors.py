"""Bad input is refused before any compute, with the bad value named."""
import pytest

from splitsweep.job import Job
from splitsweep.plan import ConfigError, check_config, make_plan
from splitsweep.records import read_rows
from tests.helpers import TOKENS_PER_STEP, compose_cfg, run_cli

T = TOKENS_PER_STEP


def plan_error(tmp_path, *overrides) -> str:
    with pytest.raises(ConfigError) as err:
        make_plan(compose_cfg(tmp_path, *overrides))
    return str(err.value)


def test_unknown_domain(tmp_path):
    msg = plan_error(tmp_path, f"split.pretrain_tokens={T}", f"split.special_tokens={T}", "split.expert_domain=d9")
    assert "'d9'" in msg and "d0" in msg and "mixture" in msg


def test_negative_tokens(tmp_path):
    msg = plan_error(tmp_path, f"split.pretrain_tokens=-{T}", f"split.special_tokens={T}")
    assert "split.pretrain_tokens" in msg and "negative" in msg


def test_tokens_not_whole_batches_name_nearest_valid_values(tmp_path):
    msg = plan_error(tmp_path, f"split.pretrain_tokens={T}", f"split.special_tokens={3 * T + 5}")
    assert "split.special_tokens=389" in msg and "384" in msg and "512" in msg


def test_fraction_outside_unit_interval(tmp_path):
    msg = plan_error(tmp_path, "split.budget_tokens=1280", "split.pretrain_fraction=1.5")
    assert "1.5" in msg and "[0, 1]" in msg


def test_fraction_that_is_not_whole_batches(tmp_path):
    msg = plan_error(tmp_path, f"split.budget_tokens={10 * T}", "split.pretrain_fraction=0.25")
    assert "0.25" in msg and "0.2 or 0.3" in msg


def test_data_too_small_without_repetition(tmp_path):
    msg = plan_error(tmp_path, "data.allow_repetition=false", f"split.pretrain_tokens={T}",
                     f"split.special_tokens={40 * T}", "split.expert_domain=d1")
    assert "'d1'" in msg and "epochs" in msg and "data.allow_repetition" in msg


def test_unknown_model_via_cli(tmp_path):
    proc = run_cli(tmp_path, "model=llama_nope", f"split.pretrain_tokens={T}", check=False)
    assert proc.returncode != 0
    assert "llama_nope" in proc.stderr and "llama_27k" in proc.stderr  # Hydra lists the valid names


def test_config_error_via_cli_is_one_clear_line(tmp_path):
    proc = run_cli(tmp_path, "split.pretrain_tokens=100", "split.special_tokens=0", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("splitsweep: error: split.pretrain_tokens=100")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "store").exists()  # no compute, nothing written


def test_nan_loss_stops_with_failed_status_and_keeps_records(tmp_path):
    good = Job(compose_cfg(tmp_path, f"split.pretrain_tokens={T}", f"split.special_tokens={T}",
                           "split.expert_domain=d0")).run()
    bad = Job(compose_cfg(tmp_path, "train.lr=1e12", "train.grad_clip=1e30", f"split.pretrain_tokens={T}",
                          f"split.special_tokens={8 * T}", "split.expert_domain=d1", "seed=3"))
    with pytest.raises(Exception) as err:
        bad.run()
    assert "loss is" in str(err.value) and "stopping" in str(err.value)
    status = (bad.run_dir / "status.json").read_text()
    assert '"failed"' in status
    assert read_rows(tmp_path / "sweeps" / "test") == good


def test_a_misspelled_train_or_split_key_is_refused_naming_the_valid_ones(tmp_path):
    ok = [f"split.pretrain_tokens={T}", f"split.special_tokens={T}"]
    msg = plan_error(tmp_path, *ok, "+train.lrr=1e-3")
    assert "'train.lrr'" in msg and "did you mean train.lr?" in msg and "warmup_steps" in msg
    msg = plan_error(tmp_path, *ok, "+train.optimizer.weight_decy=0.1")
    assert "'train.optimizer.weight_decy'" in msg and "weight_decay" in msg and "betas" in msg
    msg = plan_error(tmp_path, *ok, "+split.expert_domains=d0")
    assert "'split.expert_domains'" in msg and "did you mean split.expert_domain?" in msg
    make_plan(compose_cfg(tmp_path, *ok, "train=gpu", "train.global_batch=1", "train.seq_len=128"))  # declared keys pass


def test_a_misspelled_data_or_eval_key_is_refused_naming_the_valid_ones(tmp_path):
    """data's keys are its kind's file's (conf/data/<kind>.yaml), eval's are conf/eval/none.yaml's; a mapping
    declared empty (eval.local_datasets: task -> settings) is free-form."""
    ok = [f"split.pretrain_tokens={T}", f"split.special_tokens={T}"]
    msg = plan_error(tmp_path, *ok, "+data.entries_per_book=3")
    assert "'data.entries_per_book'" in msg and "did you mean data.entries_per_domain?" in msg \
        and "conf/data/phonebook.yaml" in msg
    msg = plan_error(tmp_path, *ok, "+eval.num_fewshots=1")
    assert "did you mean eval.num_fewshot?" in msg and "include_paths" in msg
    check_config(compose_cfg(tmp_path, *ok, "eval=phonebook_mc", "+eval.local_datasets.arc_easy.dataset_path=json"))
