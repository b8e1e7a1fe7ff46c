"""The training loop: read a batch for the step, forward, backward, step; checkpoint and log on the way.

A segment trains steps [first_step, last_step) of one expert path (seed steps, then expert steps). The
batch, the learning rate and hence the whole trajectory are functions of the step alone, so stopping and
resuming from a checkpoint gives the same model as not stopping.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import MIXTURE, TokenSource
from .distributed import DistEnv
from .parallelize import TrainLayout
from .schedule import Schedule


class TrainingDiverged(RuntimeError):
    pass


class Preempted(RuntimeError):
    """Raised after a checkpoint was saved because the job was asked to stop (SIGUSR2/SIGTERM).

    `signum` is the signal (rank 0's, on every rank) and `stop` the StopFlag that caught it: whoever
    catches this calls `stop.hand_over(signum)` to let the previous handler act (submitit requeues).
    """

    def __init__(self, message: str = "", signum: int | None = None, stop: "StopFlag | None" = None):
        super().__init__(message)
        self.signum, self.stop = signum, stop


class StopFlag:
    """Set by SIGUSR2/SIGTERM (preemption or walltime); checked between steps.

    The handlers it replaces are kept: the training loop first saves a checkpoint and raises
    Preempted, then `hand_over` restores them and calls the one for the signal received. Inside a
    submitit job that is submitit's USR2 handler, which resubmits the job's callable (Hydra's submitit
    launcher has a `checkpoint` method) and requeues it with `scontrol requeue`; outside a job the
    default action ends the process by the same signal.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def install(self):
        for sig in self.SIGNALS:
            try:
                previous = signal.getsignal(sig)
                owner = getattr(previous, "__self__", None)
                if isinstance(owner, StopFlag):  # an earlier job in this process: chain to what it replaced
                    previous = owner.previous.get(sig, signal.SIG_DFL)
                signal.signal(sig, self._handle)
                self.previous[sig] = previous
            except ValueError:  # not the main thread (e.g. inside some launchers)
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def restore(self) -> None:
        """Put back the handlers `install` replaced."""
        for sig, previous in self.previous.items():
            try:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self.previous = {}

    def hand_over(self, signum: int | None = None) -> None:
        """After the checkpoint is saved: let the handler we replaced act on the signal.

        submitit's handler requeues and exits (rank 0) or returns (other ranks); SIG_DFL ends the process
        by the signal; a handler that returns (or SIG_IGN) leaves it to the caller to exit.
        """
        signum = signum if signum is not None else self.signum
        previous = self.previous.get(signum, signal.SIG_DFL) if signum is not None else None
        self.restore()
        if signum is None or previous == signal.SIG_IGN:
            return
        if callable(previous):
            previous(signum, None)
            return
        import os

        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the default action is asynchronous; it ends the process during this sleep

    @property
    def set(self) -> bool:
        return self.signum is not None


@dataclass
class TrainingPath:
    """Which data stream each optimizer step reads: `seed_steps` on the mixture, then `expert_steps` on
    `expert_stream` (not a filesystem path)."""

    seed_steps: int
    expert_steps: int
    expert_stream: str  # a domain name or MIXTURE
    seed_offsets: np.ndarray | None = None  # sequences of each domain the seed read

    def stream_at(self, step: int) -> tuple[str, int]:
        """(stream, index of the step's batch in that stream)."""
        if step < self.seed_steps or self.expert_stream == MIXTURE:
            return MIXTURE, step
        return self.expert_stream, step - self.seed_steps


@dataclass
class BatchSpec:
    global_batch: int
    micro_batch: int | None  # per-rank micro batch for gradient accumulation; None: the whole local batch
    seq_len: int

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


@dataclass
class Progress:
    """Prints a progress line at the first update, then at most once every `every_s` seconds (and
    whenever forced, e.g. at a segment's last step)."""
    label: str
    total_steps: int
    tokens_per_step: int
    every_s: float = 10.0
    # -inf, not 0.0: time.monotonic() counts from boot on Linux, so with 0.0 the first line would wait
    # until the machine had been up for `every_s` seconds.
    _last: float = field(default=-math.inf)
    _t0: float = field(default_factory=time.monotonic)
    _tokens0: int = 0

    def update(self, step: int, done_steps: int, loss: float, lr: float, force: bool = False):
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        rate = done_steps * self.tokens_per_step / max(now - self._t0, 1e-9)
        pct = 100.0 * (step + 1) / max(self.total_steps, 1)
        print(f"[{self.label}] step {step + 1}/{self.total_steps} ({pct:5.1f}%) "
              f"tokens {(step + 1) * self.tokens_per_step:,} loss {loss:.4f} lr {lr:.2e} {rate:,.0f} tok/s",
              flush=True)


def next_token_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tokens[:, 1:].reshape(-1))


def check_world(batch: BatchSpec, world_size: int) -> int:
    """The micro batch for this many ranks; raises ValueError naming the setting that does not fit."""
    if batch.global_batch % world_size:
        raise ValueError(f"train.global_batch={batch.global_batch} is not divisible by the "
                         f"{world_size} ranks of this job")
    local = batch.global_batch // world_size
    micro = batch.micro_batch or local
    if local % micro:
        raise ValueError(f"train.micro_batch={micro} does not divide the per-rank batch {local} "
                         f"(global_batch {batch.global_batch} / {world_size} ranks)")
    return micro


class Trainer:
    """The loop of one job. `sync_every` steps apart (and before any checkpoint and at the last step) the
    host reads what the device accumulated -- the summed loss and rank 0's stop signal, in one all-reduce --
    checks for divergence, logs and decides to stop; between those reads a step never waits for the device."""

    def __init__(self, model, optimizer, source: TokenSource, schedule: Schedule, batch: BatchSpec,
                 env: DistEnv, grad_clip: float = 1.0, stop: StopFlag | None = None,
                 layout: TrainLayout | None = None, sync_every: int = 10):
        self.micro_batch = check_world(batch, env.world_size)
        self.model, self.optimizer, self.source = model, optimizer, source
        self.schedule, self.batch, self.env, self.grad_clip = schedule, batch, env, grad_clip
        self.stop = stop or StopFlag()
        self.layout = layout or TrainLayout()
        self.sync_every = max(int(sync_every), 1)
        self.tokens_trained = 0

    def _local_batch(self, path: TrainingPath, step: int) -> torch.Tensor:
        stream, index = path.stream_at(step)
        local = self.batch.global_batch // self.env.world_size
        start = index * self.batch.global_batch + self.env.rank * local
        offset = path.seed_offsets if stream != MIXTURE else None
        rows = torch.from_numpy(self.source.sequences(stream, start, local, offset=offset))
        if self.env.device.type == "cuda":  # pinned, so the copy runs while the device computes
            return rows.pin_memory().to(self.env.device, non_blocking=True)
        return rows.to(self.env.device)

    def _read(self, loss_sum: torch.Tensor) -> tuple[float, int | None]:
        """One host sync: (the loss summed over ranks, rank 0's stop signal or None)."""
        signum = self.stop.signum if self.env.is_main and self.stop.signum is not None else 0
        box = torch.stack([loss_sum.double(), torch.tensor(float(signum), dtype=torch.float64,
                                                           device=loss_sum.device)])
        total, signum = self.env.all_reduce_sum(box).tolist()  # only rank 0 adds a signal
        return total, (int(signum) or None)

    def train(self, path: TrainingPath, first_step: int, last_step: int, label: str,
              checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0,
              log: Callable[[int, dict], None] | None = None, progress_every_s: float = 10.0) -> int:
        """Train steps [first_step, last_step); `checkpoint(next_step)` saves resumable state."""
        from torchtitan.distributed.utils import clip_grad_norm_

        progress = Progress(label, path.seed_steps + path.expert_steps, self.batch.tokens_per_step,
                            every_s=progress_every_s)
        self.model.train()
        params = list(self.model.parameters())
        interval_loss = torch.zeros((), device=self.env.device)  # summed step losses since the last read
        interval_steps = 0
        tokens = self._local_batch(path, first_step) if first_step < last_step else None
        for step in range(first_step, last_step):
            lr = self.schedule.lr(step, path.seed_steps, path.expert_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch, tokens = tokens, (self._local_batch(path, step + 1) if step + 1 < last_step else None)
            n_micro = batch.size(0) // self.micro_batch
            for micro in batch.split(self.micro_batch):
                with self.layout.autocast(self.env):
                    loss = next_token_loss(self.model, micro) / n_micro
                loss.backward()
                interval_loss += loss.detach()
            grad_norm = clip_grad_norm_(params, self.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.tokens_trained += self.batch.tokens_per_step
            interval_steps += 1
            done = step + 1 - first_step
            last = step + 1 == last_step
            checkpoint_due = (checkpoint is not None and not last and checkpoint_every
                              and (step + 1) % checkpoint_every == 0)
            if not (last or checkpoint_due or done % self.sync_every == 0):
                continue
            # A read before every checkpoint: a diverged model is never saved.
            total, signum = self._read(interval_loss)
            loss_value = total / self.env.world_size / interval_steps
            interval_loss.zero_()
            interval_steps = 0
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"[{label}] loss is {loss_value} by step {step + 1} "
                                       f"(lr {lr:.2e}); stopping. Lower train.lr or raise train.warmup_steps.")
            if log is not None and self.env.is_main:  # torchtitan's clip returns the full norm on every rank
                gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
                log(step + 1, {"train/loss": loss_value, "train/lr": lr, "train/grad_norm": float(gn),
                               "train/tokens": (step + 1) * self.batch.tokens_per_step,
                               "train/tokens_per_s": done * self.batch.tokens_per_step
                               / max(time.monotonic() - progress._t0, 1e-9)})
            if self.env.is_main:
                progress.update(step, done, loss_value, lr, force=last)
            stop_now = signum is not None and not last  # at the last step: just finish
            if checkpoint is not None and not last and (stop_now or checkpoint_due):
                checkpoint(step + 1)
            if stop_now:
                raise Preempted(f"[{label}] stopped by signal {signum} after step {step + 1}; "
                                f"checkpoint saved", signum=signum, stop=self.stop)
        return last_step

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits of an evaluation batch, under the training's precision policy."""
        with self.layout.autocast(self.env):
            return self.model(tokens[:, :-1])

    @torch.no_grad()
    def evaluate(self, rows: np.ndarray, batch_rows: int = 16) -> tuple[float, int]:
        """Mean next-token cross-entropy (nats) over `rows`, split across ranks; (loss, tokens)."""
        total, count, _, _ = self._sharded_map(rows, batch_rows, self._sum_ce)
        return total / max(count, 1), int(count)

    @torch.no_grad()
    def evaluate_with_se(self, rows: np.ndarray, batch_rows: int = 16,
                         documents: np.ndarray | None = None) -> tuple[float, int, float]:
        """(mean next-token loss, tokens, its standard error over documents): `documents[i]` is the document
        of row i (None: every row its own). Rows of one document are not independent samples, so the error
        is the cluster (ratio-estimator) one: sum over documents of (loss sum - mean x tokens)^2."""
        sums = self._row_sums(rows, batch_rows)
        tokens_per_row = rows.shape[1] - 1
        documents = np.arange(len(rows)) if documents is None else np.asarray(documents)
        _, doc = np.unique(documents, return_inverse=True)
        doc_sums = np.bincount(doc, weights=sums)
        doc_tokens = np.bincount(doc) * float(tokens_per_row)
        count = doc_tokens.sum()
        mean = float(doc_sums.sum() / max(count, 1))
        c = len(doc_sums)
        var = c / max(c - 1, 1) * float(np.sum((doc_sums - mean * doc_tokens) ** 2)) / max(count, 1) ** 2
        return mean, int(count), float(np.sqrt(var))

    @torch.no_grad()
    def _row_sums(self, rows: np.ndarray, batch_rows: int) -> np.ndarray:
        """Summed next-token loss of every row (all ranks take part; every rank gets the whole vector)."""
        n = len(rows)

        def row_ce(tokens, weight, index):
            logits = self._logits(tokens)
            ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tokens[:, 1:].reshape(-1),
                                 reduction="none").view(tokens.size(0), -1)
            return (torch.zeros(n, dtype=torch.float64, device=ce.device)
                    .index_add_(0, index, (ce.sum(-1) * weight).double()),)

        return self._sharded_map(rows, batch_rows, row_ce, extra=np.arange(n), vectors=True)[0]

    @torch.no_grad()
    def recall(self, rows: np.ndarray, mask: np.ndarray, batch_rows: int = 64) -> float:
        """Share of rows whose masked targets are all the argmax (exact-match greedy recall)."""
        def correct(tokens, weight, row_mask):
            logits = self._logits(tokens)
            hit = (logits.argmax(-1) == tokens[:, 1:]) | ~row_mask
            return (hit.all(-1).float() * weight).sum(), weight.sum()

        hits, count = self._sharded_map(rows, batch_rows, correct, extra=mask)[:2]
        return hits / max(count, 1)

    def _sum_ce(self, tokens, weight, _mask=None):
        logits = self._logits(tokens)
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tokens[:, 1:].reshape(-1),
                             reduction="none").view(tokens.size(0), -1)
        return ((ce.sum(-1) * weight).sum(), (weight * ce.size(1)).sum(), (ce.mean(-1) ** 2 * weight).sum(),
                weight.sum())

    def _sharded_map(self, rows, batch_rows, fn, extra=None, vectors=False):
        """Run `fn` over rows split across ranks; every rank makes the same number of forward calls
        (FSDP needs it), padding with zero-weight copies of row 0. Returns the summed outputs as floats
        (`vectors`: as numpy arrays)."""
        self.model.eval()
        w, r = self.env.world_size, self.env.rank
        chunk = batch_rows * w
        acc = None  # the sums `fn` returns, accumulated over batches and ranks
        for start in range(0, len(rows), chunk):
            idx = np.arange(start + r * batch_rows, min(start + (r + 1) * batch_rows, len(rows)))
            weight = np.ones(len(idx))
            if len(idx) == 0:
                idx, weight = np.array([0]), np.zeros(1)
            tokens = torch.from_numpy(np.asarray(rows[idx])).to(self.env.device)
            weight_t = torch.from_numpy(weight).to(self.env.device)
            args = (tokens, weight_t)
            if extra is not None:
                args = args + (torch.from_numpy(np.asarray(extra[idx])).to(self.env.device),)
            sums = torch.stack([v.double() for v in fn(*args)])
            acc = sums if acc is None else acc + sums
        self.env.all_reduce_sum(acc)
        self.model.train()
        if vectors:
            return tuple(v.cpu().numpy() for v in acc)
        return tuple(float(v) for v in acc)
