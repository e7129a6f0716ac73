"""Server-side repair of the aggregated global model with a small clean set: RNP, NAD or plain fine-tuning.

Text models take the task's own repair instead (``ServerTask.repair``: BTU's clean tune).

Runs after aggregation (after fusion under secure aggregation: the server repairs only the aggregate it may
see). RNP's keep-masks are merged across rounds and re-applied to every new global model, so a channel pruned
once stays pruned even though clients keep training it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["RepairStage"]

log = logging.getLogger("bastionfl.server")


class RepairStage:
    """Repair ``rs.new_state`` in place with the configured defense; report what it did in the round's metrics.

    With ``repair_last_rounds = K > 0`` only the last K rounds repair; earlier rounds only re-apply RNP's saved
    masks (so a pruned channel stays pruned).
    """

    name = "repair"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        if rs.new_state is None:
            raise RoundFailed("repair needs an aggregated model")
        if ctx.task.clean_set is None:
            raise RoundFailed("repair needs a clean set: set clean_set_size")
        saved = ctx.run_state.setdefault("checkpointable", {}).get("rnp_mask")
        k = ctx.cfg.repair_last_rounds
        if k > 0 and rs.server_round <= ctx.cfg.rounds - k:
            if saved:
                from bastionfl.defenses.rnp import apply_rnp_mask

                model = ctx.new_model()
                model.load_state_dict(rs.new_state)
                apply_rnp_mask(model, {n: torch.tensor(v, dtype=torch.bool) for n, v in saved.items()})
                rs.new_state = {n: v.detach().clone() for n, v in model.state_dict().items()}
            return
        model = ctx.new_model()
        model.load_state_dict(rs.new_state)
        seed = ctx.cfg.seed * 1_000_003 + rs.server_round
        start = time.perf_counter()
        report: dict[str, Any]
        if ctx.task.repair is not None:
            repaired, report = ctx.task.repair(model, seed)
        elif ctx.cfg.repair == "rnp":
            from bastionfl.defenses.rnp import apply_rnp_mask, rnp_repair

            if saved:
                apply_rnp_mask(model, {k: torch.tensor(v, dtype=torch.bool) for k, v in saved.items()})
            repaired, mask, report = rnp_repair(model, *ctx.task.clean_set, seed=seed)
            merged = {k: (torch.tensor(saved[k], dtype=torch.bool) & v if saved else v) for k, v in mask.items()}
            apply_rnp_mask(repaired, merged)
            ctx.run_state["checkpointable"]["rnp_mask"] = {k: v.tolist() for k, v in merged.items()}
            report["pruned_channels_total"] = int(sum(int((~v).sum()) for v in merged.values()))
        elif ctx.cfg.repair == "nad":
            from bastionfl.defenses.nad import nad_repair

            repaired, report = nad_repair(model, *ctx.task.clean_set, seed=seed)
        elif ctx.cfg.repair == "finetune":
            from bastionfl.defenses.finetune import finetune_repair

            repaired, report = finetune_repair(model, *ctx.task.clean_set, seed=seed)
        else:
            raise RoundFailed(f"unknown repair {ctx.cfg.repair!r}")
        rs.new_state = {k: v.detach().clone() for k, v in repaired.state_dict().items()}
        rs.metrics["repair"] = {k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))}
        rs.metrics["repair_s"] = time.perf_counter() - start
