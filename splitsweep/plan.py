"""From a job's config to a checked plan: token counts in whole steps, and the identities of its seed
and of the run. Every check here runs before any compute is spent."""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import resolvers  # noqa: F401 (registers ${ss_by_n:...} for the configs planned here)
from .data import MIXTURE, TokenSource, build_source
from .errors import ConfigError
from .model import ModelSpec
from .parallelize import ACTIVATION_CHECKPOINTING, PRECISIONS, TrainLayout
from .schedule import SCHEDULES, Schedule
from .identity import config_hash
from .steps import ExpertStep, Trajectory, TrajectorySchedule
from .train import BatchSpec
from .train_args import TrainArgs

# Bump when a change to training semantics makes stored seeds and runs invalid.
STORE_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _whole_steps(name: str, tokens, tokens_per_step: int) -> int:
    if tokens is None or isinstance(tokens, bool) or float(tokens) != int(float(tokens)):
        raise ConfigError(f"{name}={tokens!r} must be a whole number of tokens")
    tokens = int(float(tokens))
    if tokens < 0:
        raise ConfigError(f"{name}={tokens} is negative")
    if tokens % tokens_per_step:
        lower = tokens // tokens_per_step * tokens_per_step
        raise ConfigError(
            f"{name}={tokens:,} is not a whole number of batches of {tokens_per_step:,} tokens "
            f"(global_batch x seq_len); nearest valid values: {lower:,} or {lower + tokens_per_step:,}")
    return tokens // tokens_per_step


# ---------------------------------------------------------------------- value checks (before any compute)
DEVICES = ("auto", "cpu", "cuda")  # what init_distributed tells apart: anything else would run on the CPU
DATA_KINDS = ("phonebook", "hf")
EVAL_SCOPES = ("all", "own")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_integer(name: str, value, minimum: int) -> int:
    """`value` as an int >= `minimum`; a ConfigError naming the nearest valid values otherwise."""
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    if value != int(value):
        near = [n for n in (math.floor(value), math.ceil(value)) if n >= minimum] or [minimum]
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}; nearest valid "
                          f"value{'s' if len(near) > 1 else ''}: {' or '.join(map(str, near))}")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}; nearest valid value: {minimum}")
    return int(value)


def check_unit_interval(name: str, value) -> float:
    """`value` in [0, 1]."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        near = "" if not _is_number(value) or math.isnan(value) else f"; nearest valid value: {min(max(value, 0), 1):g}"
        raise ConfigError(f"{name}={value!r} is outside [0, 1]{near}")
    return float(value)


def check_positive(name: str, value, default) -> float:
    """`value` > 0 and finite (there is no nearest valid value: name the default instead)."""
    if not _is_number(value) or not 0 < value < math.inf:
        raise ConfigError(f"{name}={value!r} must be a number > 0 (the default is {default})")
    return float(value)


def check_sweep_name(value) -> str:
    """A plain directory name: sweep_name is one component of paths.sweep_dir, never a path."""
    name = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        plain = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._") or "default"
        raise ConfigError(f"sweep_name={value!r} must be a plain name: letters, digits, '_', '-' and '.', "
                          f"not '.' or '..', no '/'; e.g. sweep_name={plain}")
    return name


def _check_choice(name: str, value, valid: tuple[str, ...]) -> None:
    if str(value) not in valid:
        near = difflib.get_close_matches(str(value), valid, n=1)
        raise ConfigError(f"{name}={value!r} is unknown; valid values: {', '.join(valid)}"
                          + (f"; nearest valid value: {near[0]}" if near else ""))


def _check_train(t) -> None:
    for key in ("global_batch", "seq_len"):
        check_integer(f"train.{key}", t[key], 1)
    if t.micro_batch is not None:
        check_integer("train.micro_batch", t.micro_batch, 1)
    _check_choice("train.schedule", t.schedule, SCHEDULES)
    check_positive("train.lr", t.lr, 3.0e-3)
    check_integer("train.warmup_steps", t.warmup_steps, 0)
    check_unit_interval("train.min_lr_factor", t.min_lr_factor)
    check_unit_interval("train.decay_fraction", t.decay_fraction)
    check_unit_interval("train.pretrain_only_cooldown", t.pretrain_only_cooldown)
    _check_choice("train.eval_scope", t.eval_scope, EVAL_SCOPES)
    check_positive("train.grad_clip", t.grad_clip, 1.0)
    o = t.optimizer
    betas = list(o.betas) if OmegaConf.is_list(o.betas) else o.betas
    if not isinstance(betas, list) or len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"train.optimizer.betas={betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.95]")
    check_positive("train.optimizer.eps", o.eps, 1.0e-8)
    if not _is_number(o.weight_decay) or not 0 <= o.weight_decay < math.inf:
        raise ConfigError(f"train.optimizer.weight_decay={o.weight_decay!r} must be a number >= 0; "
                          f"nearest valid value: 0")
    check_integer("train.checkpoint_every_steps", t.checkpoint_every_steps, 1)
    check_integer("train.eval_batch", t.eval_batch, 1)
    check_positive("train.progress_every_s", t.progress_every_s, 10)
    check_positive("train.lock_stale_s", t.lock_stale_s, 120)
    _check_choice("train.device", t.device, DEVICES)
    if t.threads is not None:
        check_integer("train.threads", t.threads, 1)
    _check_choice("train.precision", t.precision, PRECISIONS)
    _check_choice("train.activation_checkpointing", t.activation_checkpointing, ACTIVATION_CHECKPOINTING)
    check_integer("train.sync_every_steps", t.sync_every_steps, 1)
    TrainArgs.of(t)  # every other value's type (train_args.py): a switch is true or false, a count whole...


def _check_data(d) -> None:
    _check_choice("data.kind", d.kind, DATA_KINDS)
    check_integer("data.data_seed", d.data_seed, 0)
    if d.kind == "phonebook":
        from .data.phonebook import PhonebookArgs

        check_integer("data.n_domains", d.n_domains, 1)
        check_integer("data.entries_per_domain", d.entries_per_domain, 1)
        check_integer("data.heldout_sequences", d.heldout_sequences, 1)
        PhonebookArgs.of(d)  # every other value's type
    else:
        from .data.prepare import HFDataArgs

        check_integer("data.heldout_tokens", d.heldout_tokens, 1)
        m = d.get("heldout_max_overlap")
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1):
            raise ConfigError(f"data.heldout_max_overlap={m!r}: a share of a document's spans in [0, 1) "
                              f"(e.g. 0.25), or null to hold out any document")
        check_integer("data.batch_documents", d.batch_documents, 1)
        check_integer("data.num_proc", d.num_proc, 1)
        HFDataArgs.of(d)


TOP_LEVEL = ("model", "data", "train", "split", "logger", "eval", "sweep_name", "seed", "paths", "report", "hydra")


def check_top_level(cfg: DictConfig) -> None:
    """A key the config does not have (`+conf/model=...`, `+modle=...`) would be carried along and ignored."""
    for key in cfg.keys():
        if key not in TOP_LEVEL:
            near = difflib.get_close_matches(str(key).split("/")[-1], TOP_LEVEL, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"unknown config key {key!r}{hint}; the config's keys are {', '.join(TOP_LEVEL)}, "
                              "and its groups are chosen as group=option (model=llama_27k)")


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def section_schemas(cfg: DictConfig) -> dict[str, Path]:
    """A section's keys are those of the config file every option of its group starts from (data: the file of
    its kind): the defaults and the names live once, in conf/, and a key no file declares (`+train.lrr=1`, a
    typo in a sweep file) is refused."""
    kind = OmegaConf.select(cfg, "data.kind", default=None)
    return {"train": CONF_DIR / "train" / "cpu.yaml", "split": CONF_DIR / "split" / "default.yaml",
            "data": CONF_DIR / "data" / f"{kind}.yaml", "eval": CONF_DIR / "eval" / "none.yaml"}


def _declared_keys(node, prefix: str) -> dict:
    """{dotted key: sub-keys, or None for a leaf or a free-form mapping (declared `{}`)} of a plain config node."""
    out = {}
    for key, value in node.items():
        nested = isinstance(value, dict) and value
        out[f"{prefix}.{key}"] = _declared_keys(value, f"{prefix}.{key}") if nested else None
    return out


def check_known_keys(cfg: DictConfig) -> None:
    """Every key of the train, split, data and eval sections (nested ones included) is one their config files
    declare."""
    for section, path in section_schemas(cfg).items():
        if section not in cfg or not path.exists():
            continue
        declared = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        declared.pop("defaults", None)
        _check_keys(cfg[section], _declared_keys(declared, section), section, path)


def _check_keys(node, declared: dict, prefix: str, path: Path) -> None:
    for key in node.keys():
        dotted = f"{prefix}.{key}"
        if dotted not in declared:
            valid = sorted(k.rsplit(".", 1)[-1] for k in declared)
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {prefix}.{near[0]}?)" if near else ""
            raise ConfigError(f"unknown config key {dotted!r}{hint}; {prefix}'s keys are {', '.join(valid)} "
                              f"(declared in conf/{path.relative_to(CONF_DIR)})")
        if declared[dotted] is not None and OmegaConf.is_dict(node[key]):
            _check_keys(node[key], declared[dotted], dotted, path)


def check_config(cfg: DictConfig) -> None:
    """Every plain value the job relies on, against its valid range, before any data is read or prepared:
    a ConfigError naming the key, the bad value and the valid range (and the nearest valid value)."""
    check_top_level(cfg)
    check_known_keys(cfg)
    check_sweep_name(cfg.get("sweep_name"))
    check_integer("seed", cfg.get("seed"), 0)
    _check_train(cfg.train)
    _check_data(cfg.data)


@dataclass
class Plan:
    cfg: DictConfig
    spec: ModelSpec
    source: TokenSource
    schedule: Schedule
    batch: BatchSpec
    rng_seed: int  # model init and data order (cfg.seed); `seed_*` below are the seed model's
    seed_steps: int
    expert_steps: int
    expert_domain: str
    trajectory_id: str
    run_id: str
    config_hash: str
    seed_offsets: np.ndarray
    epochs_max: float
    accounting: str = "per_path"  # how the grid point's budget is read (split.accounting)
    budget_tokens: int = 0  # T (per_path) or C (shared_seed) the point's split divides
    n_experts: int = 1  # K, the experts sharing the seed under shared_seed
    recorded_steps: tuple[int, int] | None = None  # (D, D') of the grid point, in steps (None: the path's)
    cooldown_steps: int = 0  # a pretraining-only run's decay on the mixture, branched this many steps before D
    expert: ExpertStep | None = None  # the grid point's run as a step (its trajectory and seed follow from it)
    train: TrainArgs | None = None  # the train section's typed values

    # seed_steps / expert_steps are the path trained: where it leaves the seed trajectory, and what follows.
    # pretrain_tokens / special_tokens are what the grid point is and its rows record (D, D'); they differ
    # only for an annealed pretraining-only run (D' = 0, the last cooldown_steps of D decayed on the mixture).
    @property
    def pretrain_tokens(self) -> int:
        return (self.recorded_steps or (self.seed_steps, self.expert_steps))[0] * self.batch.tokens_per_step

    @property
    def special_tokens(self) -> int:
        return (self.recorded_steps or (self.seed_steps, self.expert_steps))[1] * self.batch.tokens_per_step

    @property
    def seed_tokens(self) -> int:
        """Tokens of the seed checkpoint the path starts from."""
        return self.seed_steps * self.batch.tokens_per_step

    @property
    def layout(self) -> TrainLayout:
        """Precision, compile and activation checkpointing of this job's training (train.*)."""
        return TrainLayout(self.train.precision, self.train.compile, self.train.activation_checkpointing)

    @property
    def n_params(self) -> int:
        return self.spec.non_embedding_params()

    @property
    def n_params_total(self) -> int:
        return self.spec.total_params(self.source.vocab_size)

    def mixture_weight(self, domain: str) -> float:
        if domain == MIXTURE:
            return 1.0
        counts = self.source.mixture.counts
        return float(counts[self.source.domain_index(domain)] / counts.sum())


ACCOUNTINGS = ("per_path", "shared_seed")


def n_experts(split, n_domains: int) -> int:
    """K, the experts that share one seed under shared_seed accounting: split.n_experts, else every domain."""
    k = split.get("n_experts")
    if k is None:
        return n_domains
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"split.n_experts={k!r} must be a whole number >= 1 (null: one per data domain)")
    return k


def budget_tokens(split, tokens_per_step: int, n_params: int) -> int | None:
    """The budget the fraction divides: split.budget_tokens, or split.tokens_per_param x N rounded to the
    nearest whole multiple of split.budget_step_multiple steps (so a ladder states its budgets per parameter
    and every fraction of the grid is a whole number of steps at every N)."""
    tpp = split.get("tokens_per_param")
    if tpp is None:
        return split.get("budget_tokens")
    if split.get("budget_tokens") is not None:
        raise ConfigError(f"give either split.budget_tokens (here {split.budget_tokens}) or split.tokens_per_param "
                          f"(here {tpp}: the budget as tokens per non-embedding parameter), not both; e.g. add "
                          "split.budget_tokens=null")
    if not _is_number(tpp) or not 0 < tpp < math.inf:
        raise ConfigError(f"split.tokens_per_param={tpp!r} must be a number > 0, e.g. 20 (Chinchilla's ratio)")
    multiple = check_integer("split.budget_step_multiple", split.budget_step_multiple, 1)
    quantum = multiple * tokens_per_step
    return max(1, round(float(tpp) * n_params / quantum)) * quantum


def split_tokens(split, tokens_per_step: int, n_domains: int = 1, n_params: int = 0) -> tuple[int, int]:
    """(D, D') in steps: from split.pretrain_fraction of the budget (split.budget_tokens, or
    split.tokens_per_param x N) when a fraction is set, else from split.pretrain_tokens and
    split.special_tokens (a budget only pairs with a fraction).

    The budget is read in split.accounting: `per_path`, T = D + D' for each expert path; `shared_seed`, the total
    C = D + K·D' of one seed shared by K experts (D = f·C, D' = (1 - f)·C / K), and the `mixture` baseline is one
    model of C tokens (D' = (1 - f)·C), so that every grid point of a fraction spends the same compute.
    """
    accounting = split.accounting
    if accounting not in ACCOUNTINGS:
        raise ConfigError(f"split.accounting={accounting!r} is unknown; valid values: {', '.join(ACCOUNTINGS)}")
    fraction = split.get("pretrain_fraction")
    if fraction is not None:
        if split.get("pretrain_tokens") is not None or split.get("special_tokens") is not None:
            raise ConfigError("give either split.pretrain_fraction (with split.budget_tokens), or "
                              "split.pretrain_tokens and split.special_tokens, not both")
        budget = budget_tokens(split, tokens_per_step, n_params)
        if budget is None:
            raise ConfigError("split.pretrain_fraction needs split.budget_tokens (T = D + D') or "
                              "split.tokens_per_param")
        if isinstance(fraction, str) or not 0.0 <= float(fraction) <= 1.0:
            raise ConfigError(f"split.pretrain_fraction={fraction} is outside [0, 1]")
        budget_steps = _whole_steps("split.budget_tokens", budget, tokens_per_step)
        k = n_experts(split, n_domains) if accounting == "shared_seed" and split.expert_domain != MIXTURE else 1
        seed_steps = float(fraction) * budget_steps
        valid = [i for i in range(budget_steps + 1) if (budget_steps - i) % k == 0]
        if abs(seed_steps - round(seed_steps)) > 1e-6 or round(seed_steps) not in valid:
            low = max((i for i in valid if i <= seed_steps), default=valid[0])
            high = min((i for i in valid if i > seed_steps), default=valid[-1])
            per = f" with (1 - f)·T shared by {k} experts" if k > 1 else ""
            raise ConfigError(
                f"split.pretrain_fraction={fraction} of split.budget_tokens={int(budget):,}{per} is "
                f"not a whole number of batches of {tokens_per_step:,} tokens; nearest valid "
                f"fractions: {low / budget_steps:g} or {high / budget_steps:g}")
        seed_steps = int(round(seed_steps))
        return seed_steps, (budget_steps - seed_steps) // k
    if split.get("tokens_per_param") is not None:
        raise ConfigError("split.tokens_per_param needs split.pretrain_fraction (it sets the budget the fraction "
                          "divides)")
    if split.get("pretrain_tokens") is None or split.get("special_tokens") is None:
        raise ConfigError("set split.pretrain_tokens and split.special_tokens "
                          "(or split.budget_tokens and split.pretrain_fraction)")
    return (_whole_steps("split.pretrain_tokens", split.pretrain_tokens, tokens_per_step),
            _whole_steps("split.special_tokens", split.special_tokens, tokens_per_step))


def make_plan(cfg: DictConfig) -> Plan:
    check_config(cfg)
    t = TrainArgs.of(cfg.train)
    spec = ModelSpec.from_config(cfg.model)
    batch = BatchSpec(t.global_batch, t.micro_batch, t.seq_len)
    if batch.global_batch <= 0 or batch.seq_len <= 0 or (batch.micro_batch or 1) <= 0:
        raise ConfigError(f"train.global_batch, train.micro_batch and train.seq_len must be positive, got "
                          f"{batch.global_batch}, {batch.micro_batch}, {batch.seq_len}")
    schedule = Schedule(t.schedule, t.lr, t.warmup_steps, t.min_lr_factor, t.decay_fraction)
    rng_seed = int(cfg.seed)
    source = build_source(cfg.data, seq_len=batch.seq_len, seed=rng_seed)
    expert_domain = str(cfg.split.expert_domain)
    if expert_domain == "each":
        raise ConfigError("split.expert_domain=each stands for every domain's expert and the mixture baseline: "
                          f"it expands in a multirun (-m) only; for one run name a domain of {source.domains} "
                          f"or '{MIXTURE}'")
    if expert_domain != MIXTURE and expert_domain not in source.domains:
        raise ConfigError(f"split.expert_domain={expert_domain!r} is unknown; this data set's domains are "
                          f"{source.domains}, or '{MIXTURE}' for the no-split baseline")
    seed_steps, expert_steps = split_tokens(cfg.split, batch.tokens_per_step, len(source.domains),
                                            spec.non_embedding_params())
    if seed_steps + expert_steps == 0:
        raise ConfigError("split: D + D' is 0 tokens; nothing to train")
    recorded_steps = (seed_steps, expert_steps)
    cooldown = 0
    if expert_steps == 0:
        # Pretraining only: no expert, whatever the grid point's domain (one model for all of them). Under
        # wsd the seed at D is a stable-phase checkpoint, not a finished run: branch from the trajectory
        # before D and decay on the mixture over the last train.pretrain_only_cooldown of D.
        expert_domain = MIXTURE
        share = t.pretrain_only_cooldown  # in [0, 1]: check_config checked it
        if schedule.name == "wsd" and share > 0 and seed_steps > 1:
            cooldown = min(seed_steps - 1, max(1, math.ceil(share * seed_steps)))
            seed_steps, expert_steps = seed_steps - cooldown, cooldown
            schedule = dataclasses.replace(schedule, decay_fraction=1.0)

    # Repetition: passes over each domain's training text along this path.
    seed_offsets = source.mixture.consumed(seed_steps * batch.global_batch)
    read = seed_offsets.astype(float).copy()
    if expert_domain == MIXTURE:
        read = source.mixture.consumed((seed_steps + expert_steps) * batch.global_batch).astype(float)
    else:
        read[source.domain_index(expert_domain)] += expert_steps * batch.global_batch
    sizes = [source.domain_train_sequences(k) for k in range(len(source.domains))]
    epochs = [r / s for r, s in zip(read, sizes) if s]
    epochs_max = float(max(epochs)) if epochs else 0.0
    if epochs_max > 1.0 and not bool(cfg.data.get("allow_repetition", False)):
        worst = int(np.argmax([r / s if s else 0 for r, s in zip(read, sizes)]))
        raise ConfigError(
            f"domain {source.domains[worst]!r} has {sizes[worst]:,} training sequences but this run reads "
            f"{int(read[worst]):,} of them ({epochs_max:.2f} epochs); lower split.special_tokens or set "
            f"data.allow_repetition=true")

    # The optimizer enters the trajectory's identity as written (0 and 0.0 hash differently): recorded ids stay.
    optimizer = OmegaConf.to_container(cfg.train.optimizer, resolve=True)
    length = (schedule.min_lr_factor, seed_steps) if schedule.seed_depends_on_length else (None, None)
    trajectory = Trajectory(STORE_VERSION, spec.__dict__, source.vocab_size, source.identity(), batch.seq_len,
                            batch.global_batch, optimizer, t.grad_clip, rng_seed,
                            TrajectorySchedule(schedule.name, schedule.peak_lr, schedule.warmup_steps, *length),
                            source.mixture.counts.tolist(), t.precision)
    expert = ExpertStep(trajectory, seed_steps, expert_steps, expert_domain, schedule.min_lr_factor,
                        schedule.decay_fraction, STORE_VERSION, cooldown)
    accounting = cfg.split.accounting
    k = n_experts(cfg.split, len(source.domains)) if accounting == "shared_seed" else 1
    sharing = k if expert_domain != MIXTURE else 1  # D and D' given: C = D + K·D' (one model of C for the baseline)
    budget = (int(budget_tokens(cfg.split, batch.tokens_per_step, spec.non_embedding_params()))
              if cfg.split.get("pretrain_fraction") is not None
              else (recorded_steps[0] + sharing * recorded_steps[1]) * batch.tokens_per_step)
    return Plan(cfg, spec, source, schedule, batch, rng_seed, seed_steps, expert_steps, expert_domain,
                trajectory.identity, expert.identity, config_hash(cfg), seed_offsets, epochs_max, accounting,
                budget, k, recorded_steps, cooldown, expert, t)
