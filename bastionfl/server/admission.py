"""The admission stage: a pseudonym handshake with every connected node at the start of each round (before
sampling, so an unauthenticated node never takes a sample slot), then a MAC on every later message of the round.

Three Flower round trips (``query`` messages with an ``auth`` record; names in ``bastionfl.protocol.admission``) carry
msg1 -> msg2, msg3 -> SCONF and the client's ACK; the server relays to the Home Authority (in-process
``LocalRelay`` in simulation, ``HttpRelay`` to the HA service in deployment) and learns only "valid + session key +
opaque handle". Nodes that fail are dropped from the round. A messenger wrapper then tags every later message
with the node's session key and drops replies whose tag does not verify; sessions die with the round.

Waiting is bounded for an outsider: the three steps share one deadline, ``auth_timeout_s``, and each step ends as
soon as every node still in the handshake has answered. A node that lets that deadline pass becomes a suspect:
later rounds' handshakes still ask it but no longer wait for it, so a silent outsider costs a run one admission
timeout. A node that stays silent in any later stage of a round loses its session, so no later stage of the round
waits for it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from bastionfl.auth import AuthError, AuthServer, HARelay, HomeAuthority, LocalRelay, Session, load_or_create_kek
from bastionfl.config import ConfigError, RunConfig, in_process_ha_paths, simulated_credential_dir
from bastionfl.protocol import MessageType, Stage
from bastionfl.protocol.admission import (
    HANDSHAKE_RECORD,
    STEP_FINISH,
    STEP_RESPOND,
    STEP_START,
    TAG_RECORD,
    content_digest,
)
from bastionfl.server.messaging import Messenger
from bastionfl.server.stages import connected_nodes
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["AdmissionStage", "AdmissionState", "build_relay"]

log = logging.getLogger("bastionfl.server")


def build_relay(cfg: RunConfig) -> HARelay:
    """The server's channel to the HA: ``HttpRelay`` when ``auth_ha_url`` is set, else an in-process HA."""
    a = cfg.admission
    if a.ha_url:
        from bastionfl.auth import HttpRelay

        try:
            token = Path(a.ha_token_file).read_text().strip()
        except OSError:
            raise ConfigError(f"config key 'auth_ha_token_file': cannot read {a.ha_token_file}") from None
        if not token:
            raise ConfigError("config key 'auth_ha_token_file': the token file is empty")
        try:
            return HttpRelay(a.ha_url, token, verify=a.ha_ca or True)
        except (AuthError, OSError) as exc:  # not https://, or an unreadable CA file
            raise ConfigError(f"config key 'auth_ha_url': {exc}") from None
    db, kek_file = in_process_ha_paths(cfg)
    if not db.exists():
        raise ConfigError(f"config key 'auth_ha_db': no Home Authority database at {db} (enrol clients first: "
                          "bastionfl simulate does it, or bastionfl ha enroll)")
    try:
        ha = HomeAuthority.open(db, load_or_create_kek(kek_file, create=False))
    except AuthError as exc:
        raise ConfigError(f"config key 'auth_ha_db': {exc}") from None
    return LocalRelay(ha, a.server_id)


@dataclass(eq=False)
class AdmissionState:
    """Per-run admission state: the HA front, and this round's sessions (owned by one RoundState); never on disk."""

    server: AuthServer | None = None
    owner: RoundState | None = None
    sessions: dict[int, Session] | None = None  # None while the owner round's handshake is running
    # nodes that let an earlier round's admission run into its timeout: later handshakes do not wait for them
    # (they are still asked, and admitted again when they answer as fast as the others)
    suspects: set[int] = field(default_factory=set)
    wrapper: Callable[[Messenger, RoundState], Messenger] = field(init=False)

    def __post_init__(self) -> None:
        self.wrapper = lambda messenger, rs: _AuthenticatedMessenger(messenger, self, rs)

    def __repr__(self) -> str:
        return f"AdmissionState(server={self.server!r}, sessions={len(self.sessions or {})})"


class _SendGuard:
    """The grid as seen through an authenticated messenger: reads pass, direct sends raise (they would be untagged)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> object:
        if name in ("push_messages", "pull_messages", "send_and_receive"):
            raise RuntimeError("admission is on: send through the round's messenger so every message is tagged")
        return getattr(self._grid, name)


class _AuthenticatedMessenger(Messenger):
    """Sends only to nodes admitted this round, tags each message, and drops replies whose tag does not verify.

    A Messenger method not overridden here reaches ``_SendGuard`` and fails instead of sending untagged messages.
    """

    def __init__(self, inner: Messenger, admission: AdmissionState, rs: RoundState) -> None:
        super().__init__(_SendGuard(inner.grid), inner.timeout_s, inner.counter)  # type: ignore[arg-type]
        self._inner, self._admission, self._rs = inner, admission, rs

    def _handshake_running(self) -> bool:
        return self._admission.owner is self._rs and self._admission.sessions is None

    def _sessions(self) -> dict[int, Session]:
        adm = self._admission
        return adm.sessions if adm.owner is self._rs and adm.sessions is not None else {}

    def _admitted(self, stage: str, nodes: list[int]) -> list[int]:
        sessions = self._sessions()
        allowed = [n for n in nodes if n in sessions]
        if len(allowed) < len(nodes):
            log.warning("stage %s: %d node(s) not admitted this round get no message", stage, len(nodes) - len(allowed))
        return allowed

    def _tagger(self, message_type: str, content_for: Callable[[int], RecordDict]) -> Callable[[int], RecordDict]:
        sessions = self._sessions()

        def tagged(nid: int) -> RecordDict:
            content = content_for(nid)
            out = RecordDict({name: rec for name, rec in content.items() if name != TAG_RECORD})
            seq, tag = sessions[nid].seal(message_type, content_digest(out))
            out[TAG_RECORD] = ConfigRecord({"seq": seq, "tag": tag})
            return out

        return tagged

    def _verified(self, stage: str, message_type: str, reply: Message) -> bool:
        """Check and strip a reply's tag; a failing node loses its session for the rest of the round."""
        sessions = self._sessions()
        nid = reply.metadata.src_node_id
        session = sessions.get(nid)
        rec = reply.content.config_records.get(TAG_RECORD)
        ok = False
        if session is not None and rec is not None:
            seq, tag = rec.get("seq"), rec.get("tag")
            del reply.content[TAG_RECORD]
            ok = (isinstance(seq, int) and isinstance(tag, bytes)
                  and session.check(message_type, seq, content_digest(reply.content), tag))
        if not ok:
            sessions.pop(nid, None)
            rs = self._rs
            log.warning("stage %s: dropped a reply with a missing or bad session tag", stage)
            rs.metrics["auth_dropped"] = int(rs.metrics.get("auth_dropped", 0)) + 1
            rs.events.append(f"{stage}: a reply failed the session tag check and was dropped")
        return ok

    def exchange(
        self, stage: str, message_type: str, node_ids: Iterable[int], content_for: Callable[[int], RecordDict],
        group_id: str, wait_for: Collection[int] | None = None,
    ) -> tuple[list[Message], list[int]]:
        """Like :meth:`Messenger.exchange`, under this round's sessions (the handshake itself passes untagged)."""
        nodes = list(node_ids)
        if self._handshake_running():
            return self._inner.exchange(stage, message_type, nodes, content_for, group_id, wait_for)
        allowed = self._admitted(stage, nodes)
        replies, _ = self._inner.exchange(stage, message_type, allowed, self._tagger(message_type, content_for),
                                          group_id, wait_for)
        kept = [r for r in replies if self._verified(stage, message_type, r)]
        self._forget(stage, set(allowed) - {r.metadata.src_node_id for r in replies})
        return kept, sorted(set(nodes) - {r.metadata.src_node_id for r in kept})

    def exchange_streaming(
        self, stage: str, message_type: str, node_ids: Iterable[int], content_for: Callable[[int], RecordDict],
        group_id: str, on_reply: Callable[[Message], bool],
    ) -> list[int]:
        """Like the inner messenger's ``exchange_streaming``: only verified replies reach ``on_reply``."""
        nodes = list(node_ids)
        inner = getattr(self._inner, "exchange_streaming")
        if self._handshake_running():
            return inner(stage, message_type, nodes, content_for, group_id, on_reply)
        allowed = self._admitted(stage, nodes)

        def checked(reply: Message) -> bool:
            return self._verified(stage, message_type, reply) and on_reply(reply)

        answered: set[int] = set()

        def noted(reply: Message) -> bool:
            answered.add(reply.metadata.src_node_id)
            return checked(reply)

        failed = set(inner(stage, message_type, allowed, self._tagger(message_type, content_for), group_id, noted))
        self._forget(stage, set(allowed) - answered)
        return sorted(set(nodes) - (set(allowed) - failed))

    def _forget(self, stage: str, silent: set[int]) -> None:
        """End the sessions of nodes that did not answer: no later stage of the round sends to or waits for them."""
        sessions = self._sessions()
        gone = [n for n in silent if sessions.pop(n, None) is not None]
        if gone:
            self._rs.events.append(f"{stage}: {len(gone)} silent node(s) excluded from the rest of the round")


class AdmissionStage:
    """Authenticate every sampled node under a fresh pseudonym; keep only those admitted; MAC the rest of the round."""

    name = Stage.ADMISSION

    def _state(self, ctx: ServerContext) -> AdmissionState:
        state = ctx.states.get(AdmissionState)
        if state.server is None:
            state.server = AuthServer(ctx.cfg.admission.server_id, build_relay(ctx.cfg))
        if state.wrapper not in ctx.messenger_wrappers:
            ctx.messenger_wrappers.append(state.wrapper)
        return state

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = self._state(ctx)
        state.owner, state.sessions = rs, None  # the previous round's sessions end here
        nodes = list(rs.node_ids) or connected_nodes(ctx, rs)
        run_id = int(ctx.grid.run.run_id)
        handshakes = {n: state.server.begin(state.server.round_context(run_id, rs.server_round, n)) for n in nodes}
        # simulated clients find their credential file under auth_cred_dir; deployed nodes use their node config
        cred_dir = "" if ctx.cfg.admission.ha_url else simulated_credential_dir(ctx.cfg)
        config = ConfigRecord({"round": rs.server_round, "auth": "pseudonym",
                               "auth_server_id": ctx.cfg.admission.server_id, "auth_cred_dir": cred_dir})
        wait = min(ctx.cfg.admission.timeout_s, ctx.cfg.federation.stage_timeout_s)
        deadline = time.monotonic() + wait
        ha_failures = 0

        def step(name: str, payload: dict[int, dict[str, int | bytes]]) -> dict[int, ConfigRecord]:
            left = deadline - time.monotonic()
            if not payload or left <= 0:  # the admission deadline has passed: whoever is still missing is refused
                return {}
            # suspects are not waited for while there are others to wait for (with none left, everyone is awaited)
            awaited = {n for n in payload if n not in state.suspects} or set(payload)
            replies, _ = rs.messenger(ctx, timeout_s=left).exchange(
                self.name, MessageType.QUERY, list(payload),
                lambda n: RecordDict({HANDSHAKE_RECORD: ConfigRecord({"step": name, **payload[n]}), "config": config}),
                group_id=str(rs.server_round), wait_for=awaited,
            )
            answered = {r.metadata.src_node_id for r in replies}
            # an awaited node missing means the step ran into the deadline: later handshakes do not wait for it
            state.suspects = (state.suspects - answered) | (awaited - answered)
            out: dict[int, ConfigRecord] = {}
            for reply in replies:
                rec = reply.content.config_records.get(HANDSHAKE_RECORD)
                if rec is not None and reply.metadata.src_node_id in payload:
                    out[reply.metadata.src_node_id] = rec
            return out

        def field_bytes(rec: ConfigRecord, name: str) -> bytes:
            value = rec.get(name, b"")
            return value if isinstance(value, bytes) else b""

        msg2: dict[int, dict[str, int | bytes]] = {}
        for n, rec in step(STEP_START, {n: {"expiry": hs.ctx.expiry} for n, hs in handshakes.items()}).items():
            try:
                msg2[n] = {"msg2": handshakes[n].challenge(field_bytes(rec, "msg1"))}
            except AuthError as exc:  # HA unreachable or quota exhausted: this node waits for the next round
                ha_failures += 1
                log.warning("admission: Home Authority did not answer a challenge: %s", exc)
        msg4: dict[int, dict[str, int | bytes]] = {}
        for n, rec in step(STEP_RESPOND, msg2).items():
            try:
                msg4[n] = {"msg4": handshakes[n].confirm(field_bytes(rec, "msg3"))}
            except AuthError as exc:
                ha_failures += 1
                log.warning("admission: Home Authority did not answer a confirmation: %s", exc)
        sessions: dict[int, Session] = {}
        for n, rec in step(STEP_FINISH, msg4).items():
            session = handshakes[n].accept(field_bytes(rec, "ack"))
            if session is not None:
                sessions[n] = session
        state.sessions = sessions
        rejected = len(nodes) - len(sessions)
        rs.node_ids = [n for n in nodes if n in sessions]
        rs.metrics["auth_admitted"] = len(sessions)
        rs.metrics["auth_rejected"] = rejected
        if rejected:
            rs.events.append(f"admission: {rejected} of {len(nodes)} node(s) not admitted")
            log.warning("admission: %d of %d node(s) failed authentication this round", rejected, len(nodes))
        if ha_failures:
            rs.events.append(f"admission: the Home Authority failed {ha_failures} request(s)")
        if not sessions:
            reason = " (Home Authority unavailable)" if ha_failures else ""
            raise RoundFailed(f"no node passed admission{reason}")
