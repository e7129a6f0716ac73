"""The BastionFL ServerApp: reads Flower's run_config into a RunConfig and runs the staged federation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from flwr.app import Context
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid, ServerApp

from bastionfl.config import RunConfig, from_run_config
from bastionfl.errors import BastionFLError
from bastionfl.server.federation import RunObserver, run_federation

__all__ = ["app", "make_server_app"]


def make_server_app(
    cfg: RunConfig | None = None, out_dir: Path | None = None, *, resume: bool = False,
    observer: RunObserver | None = None, stop_after: int | None = None,
    on_error: Callable[[BaseException], Any] | None = None,
) -> ServerApp:
    """A ServerApp bound to ``cfg`` (else read from run_config at start); errors go to ``on_error`` if given."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_cfg = cfg if cfg is not None else from_run_config(context.run_config)
            out = out_dir or Path(run_cfg.runtime.out_dir or f"runs/flwr-{context.run_id}")
            logging.getLogger("bastionfl").setLevel(logging.INFO)
            run_federation(grid, run_cfg, out, resume=resume, observer=observer, stop_after=stop_after,
                           run_id=int(context.run_id))
        except BaseException as exc:
            if on_error is None:
                if isinstance(exc, BastionFLError):  # one clear line before Flower's own report of the exception
                    flwr_log(logging.ERROR, "BastionFL: the federation failed: %s", exc)
                raise
            on_error(exc)

    return server_app


app = make_server_app()
