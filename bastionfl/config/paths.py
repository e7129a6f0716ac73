"""Files a run derives from its configuration: the in-process Home Authority's database and the simulated
clients' credential folder (both under ``out_dir`` unless set)."""

from __future__ import annotations

from pathlib import Path

from .run import ConfigError, RunConfig

__all__ = ["in_process_ha_paths", "simulated_credential_dir"]


def in_process_ha_paths(cfg: RunConfig) -> tuple[Path, Path]:
    """``(database, key-encryption-key file)`` of an in-process HA: ``auth_ha_db`` or ``<out_dir>/auth/ha.sqlite``."""
    if cfg.admission.ha_db:
        db = Path(cfg.admission.ha_db)
    elif cfg.runtime.out_dir:
        db = Path(cfg.runtime.out_dir) / "auth" / "ha.sqlite"
    else:
        raise ConfigError("config key 'auth_ha_db': an in-process Home Authority needs auth_ha_db or out_dir")
    return db, db.with_suffix(".kek")


def simulated_credential_dir(cfg: RunConfig) -> str:
    """Folder of simulated clients' ``cred-<partition-id>.json``: ``auth_cred_dir`` or ``<out_dir>/auth`` (or '')."""
    if cfg.admission.cred_dir:
        return cfg.admission.cred_dir
    return str(Path(cfg.runtime.out_dir) / "auth") if cfg.runtime.out_dir else ""
