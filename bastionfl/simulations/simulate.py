"""A federation on Flower's Simulation Engine, in this process: the same ServerApp and ClientApp as in deployment."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from bastionfl.config import RunConfig

__all__ = ["run_simulated", "quiet_flower"]


def quiet_flower(verbose: bool) -> None:
    """Telemetry and update checks off; Flower's and Ray's logs only with ``verbose``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if verbose:
        return
    warnings.filterwarnings("ignore")
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_simulated(cfg: RunConfig, out_dir: Path, *, resume: bool = False, observer: Any = None,
                  stop_after: int | None = None) -> list[dict[str, Any]]:
    """Run the BastionFL ServerApp and ClientApp on the Simulation Engine in this process."""
    from flwr.simulation import run_simulation

    quiet_flower(cfg.runtime.verbose)

    from bastionfl.client.app import PinnedClientApp
    from bastionfl.server.app import make_server_app
    from bastionfl.server.report import read_metrics
    from bastionfl.simulations.auth_setup import prepare_simulated_ha

    if not cfg.runtime.client_state_dir:  # clients keep their defense state on disk for --resume
        import dataclasses
        import hashlib
        import shutil
        import tempfile

        # one folder per run folder (the simulated nodes' operator setting, pinned on them below)
        digest = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:24]
        state_dir = Path(tempfile.gettempdir()) / "bastionfl-client-state" / digest
        if not resume:
            shutil.rmtree(state_dir, ignore_errors=True)
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, client_state_dir=str(state_dir)))
    if cfg.admission.mode == "pseudonym":
        prepare_simulated_ha(cfg, out_dir)  # enrols the simulated clients once; kept on resume
    errors: list[BaseException] = []
    server_app = make_server_app(cfg, out_dir, resume=resume, observer=observer, stop_after=stop_after,
                                 on_error=errors.append)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": max(1, os.cpu_count() or 1), "include_dashboard": False,
                             "logging_level": "INFO" if cfg.runtime.verbose else "ERROR",
                             "log_to_driver": cfg.runtime.verbose}}
    # the simulation's user runs every node: its nodes take the run's threat model and state folder as their
    # operator's pins
    client_app = PinnedClientApp({"threat-model": str(cfg.secure.threat_model), "threshold": str(cfg.secure.threshold),
                                  "state-dir": cfg.runtime.client_state_dir})
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=cfg.federation.num_clients,
                   backend_config=backend, verbose_logging=cfg.runtime.verbose)
    if errors:
        raise errors[0]
    return list(read_metrics(out_dir)["rounds"])
