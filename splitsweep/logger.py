"""W&B logging through the real wandb library, offline by default.

Every process that trains a seed trajectory or an expert (a first run, a seed extension, a resumed expert)
logs to its own W&B run, `<seed-trajectory | expert-run_id>-<attempt>`, in the sweep's W&B directory:
`wandb sync` of offline directories that share one id replaces a run's history instead of appending to it.
A ledger beside the trajectory's or the run's state (`wandb_runs.json`) lists the attempts and the last step
each logged; an attempt logs only the steps after it (a resumed run repeats the steps since its checkpoint), so
the runs of one trajectory or one expert together hold every logged step once. A process killed with SIGKILL
may leave the ledger one logged step behind its W&B file (the ledger is written after each log call).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .store import write_json_atomic

MODES = ("offline", "online", "disabled")


def resolve_mode(cfg_mode: str) -> str:
    # WANDB_MODE=disabled must win over any config (wandb's own `mode=` argument would beat the env).
    env = os.environ.get("WANDB_MODE")
    if env == "disabled":
        return "disabled"
    if cfg_mode not in MODES:
        raise ValueError(f"logger.mode={cfg_mode!r} is unknown; choose one of {MODES}")
    return cfg_mode


def _api_key(base_url: str) -> str | None:
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    import netrc
    from urllib.parse import urlparse

    try:
        auth = netrc.netrc().authenticators(urlparse(base_url).hostname or "")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return auth[2] if auth else None


def check_logger(logger_cfg, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the fix, where wandb itself would wait 90 s or fail after training."""
    from .errors import ConfigError

    try:
        mode = resolve_mode(str(logger_cfg.mode))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if mode != "online":
        return
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not _api_key(base_url):
        raise ConfigError(f"logger.mode=online but no W&B API key for {base_url}: run `wandb login` or set "
                          f"WANDB_API_KEY (or use logger.mode=offline and `wandb sync` later)")
    import socket
    from urllib.parse import urlparse

    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(f"logger.mode=online but the W&B server {base_url} is unreachable ({err}); check "
                          f"WANDB_BASE_URL and the network, or use logger.mode=offline and `wandb sync` later") \
            from None


LEDGER = "wandb_runs.json"


class RunLogger:
    def __init__(self, logger_cfg, wandb_dir: Path, run_id: str, name: str, group: str, job_type: str,
                 config: dict, tags: list[str], active: bool = True, ledger_dir: Path | None = None):
        self.run, self.logged_through, self._ledger, self._attempts, self._base = None, 0, None, [], run_id
        mode = resolve_mode(str(logger_cfg.mode))
        if not active or mode == "disabled":
            return
        import wandb

        if ledger_dir is not None:
            self._ledger = Path(ledger_dir) / LEDGER
            self._attempts = json.loads(self._ledger.read_text())["attempts"] if self._ledger.exists() else []
            self.logged_through = max((a["last_step"] for a in self._attempts), default=0)
            run_id = f"{self._base}-{len(self._attempts)}"
            self._attempts.append({"id": run_id, "first_step": None, "last_step": self.logged_through})
            self._write_ledger(durable=True)
            name = f"{name} #{len(self._attempts) - 1}"
        config = {**config, "wandb_base_id": self._base}

        wandb_dir = Path(wandb_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        # wandb also writes a cache and settings outside `dir=`; keep them beside the runs unless set.
        os.environ.setdefault("WANDB_CACHE_DIR", str(wandb_dir / ".cache"))
        os.environ.setdefault("WANDB_CONFIG_DIR", str(wandb_dir / ".config"))
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=str(logger_cfg.project), entity=logger_cfg.get("entity"), dir=str(wandb_dir),
            id=run_id, name=name, group=group, job_type=job_type, tags=tags, config=config,
            mode=mode, resume="allow", reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def log(self, step: int, metrics: dict) -> None:
        if self.run is None or step <= self.logged_through:
            return  # an earlier attempt logged this step (this one resumed from a checkpoint before it)
        self.run.log(metrics, step=step)
        self.logged_through = step
        if self._ledger is not None:
            current = self._attempts[-1]
            current["last_step"] = step
            if current["first_step"] is None:
                current["first_step"] = step
            self._write_ledger(durable=False)  # after every log call: no fsync on the training loop's path

    def _write_ledger(self, durable: bool) -> None:
        write_json_atomic(self._ledger, {"base_id": self._base, "attempts": self._attempts}, durable=durable)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
