"""W&B logging through the real wandb library: offline by default, one W&B run per seed trajectory
and per expert, with deterministic ids so that a re-run or a requeued job resumes its W&B run."""
from __future__ import annotations

import os
from pathlib import Path

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


class RunLogger:
    def __init__(self, logger_cfg, wandb_dir: Path, run_id: str, name: str, group: str, job_type: str,
                 config: dict, tags: list[str], active: bool = True):
        self.run = None
        mode = resolve_mode(str(logger_cfg.mode))
        if not active or mode == "disabled":
            return
        import wandb

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
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
