"""The admission Mod: the client side of the pseudonym handshake, then a MAC check on every later message.

Wire format (the names and the digest live in ``bastionfl.protocol.admission``, shared with the server):

- Handshake: message type ``query`` with a ConfigRecord ``auth`` (``step`` = start | respond | finish, plus the
  bytes of that step) and ``config`` (``round``, ``auth``, ``auth_server_id``, ``auth_cred_dir``). Flower 1.41
  routes a message to its handler *before* applying Mods and raises for an unregistered ``query.<action>``, so the
  handshake rides on the registered ``query`` handler and this Mod answers it without calling the handler.
- Later messages of the round carry a ConfigRecord ``auth-tag`` = ``{seq, tag}`` with
  ``tag = Session.seal(message_type, content_digest(content))`` under the round's session key; replies likewise.

The round context is the node's own: ``context.run_id``, ``context.node_id``, the round from the message config and
the server-chosen expiry; no identity value is taken from the message body. Session and handshake state live in
``context.state`` (the node's own memory), because a ClientApp process may be fresh for every message.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from bastionfl.auth import (
    ACK_LEN,
    MSG1_LEN,
    MSG3_LEN,
    AuthClient,
    AuthError,
    CredentialStore,
    FileCredentialStore,
    RoundContext,
    Session,
)
from bastionfl.auth.primitives import encode_server_id
from bastionfl.protocol.admission import (
    HANDSHAKE_RECORD,
    STEP_FINISH,
    STEP_RESPOND,
    STEP_START,
    TAG_RECORD,
    content_digest,
)

__all__ = ["auth_mod", "current_session", "roster_key"]

log = logging.getLogger("bastionfl.client")

_RUN = "bastionfl.auth.run"  # marks a run that uses pseudonym admission (no downgrade to "none" within it)
_HANDSHAKE = "bastionfl.auth.handshake"
_SESSION = "bastionfl.auth.session"
_ROSTER_KEY = "bastionfl.auth.roster-key"  # the HA's roster key from this node's credential (public)

Handler = Callable[[Message, Context], Message]


# -- state in context.state ---------------------------------------------------------------------------------------
def _drop(context: Context, name: str) -> None:
    if name in context.state.config_records:
        del context.state[name]


def _save_session(context: Context, session: Session) -> None:
    ctx = session.ctx
    context.state[_SESSION] = ConfigRecord({
        "key": session.key, "server_id": session.server_id, "run_id": ctx.run_id, "epoch": ctx.epoch,
        "node_id": ctx.node_id, "expiry": ctx.expiry, "sent": session._sent, "received": session._received,
        "endorse_key": session.endorse_key or b"",
    })


def current_session(context: Context) -> Session | None:
    """This node's authenticated session of the current round (the secure-aggregation client endorses its epoch
    key with it), or None."""
    return _load_session(context)


def roster_key(context: Context) -> bytes | None:
    """The Home Authority's roster verification key from this node's credential (None if it has none)."""
    rec = context.state.config_records.get(_ROSTER_KEY)
    key = bytes(rec["key"]) if rec is not None else b""
    return key or None


def _load_session(context: Context) -> Session | None:
    rec = context.state.config_records.get(_SESSION)
    if rec is None:
        return None
    ctx = RoundContext(int(rec["run_id"]), int(rec["epoch"]), int(rec["node_id"]), int(rec["expiry"]))
    return Session(key=bytes(rec["key"]), server_id=str(rec["server_id"]), ctx=ctx, role="client",
                   _sent=int(rec["sent"]), _received=int(rec["received"]),
                   endorse_key=bytes(rec.get("endorse_key", b"")) or None)


def _save_handshake(context: Context, client: AuthClient) -> None:
    """Persist a handshake between messages (only its per-handshake values; the long-term key stays in the store)."""
    ctx = client._ctx
    if client._state not in ("sent1", "sent3") or ctx is None:
        _drop(context, _HANDSHAKE)
        return
    context.state[_HANDSHAKE] = ConfigRecord({
        "state": client._state, "msg1": client._msg1, "msg2": client._msg2, "msg3": client._msg3, "nc": client._nc,
        "k_s": client._k_s, "server_id": client._server_id, "run_id": ctx.run_id, "epoch": ctx.epoch,
        "node_id": ctx.node_id, "expiry": ctx.expiry,
    })


def _load_handshake(context: Context, store: CredentialStore, run_id: int, epoch: int) -> AuthClient:
    """The handshake saved for (run, round), or a fresh client (whose next step then fails uniformly)."""
    client = AuthClient(store)
    rec = context.state.config_records.get(_HANDSHAKE)
    if rec is None or int(rec["run_id"]) != run_id or int(rec["epoch"]) != epoch:
        return client
    ctx = RoundContext(run_id, epoch, int(rec["node_id"]), int(rec["expiry"]))
    client._state, client._ctx, client._ctx_d = str(rec["state"]), ctx, ctx.digest()
    client._msg1, client._msg2, client._msg3 = bytes(rec["msg1"]), bytes(rec["msg2"]), bytes(rec["msg3"])
    client._nc, client._k_s = bytes(rec["nc"]), bytes(rec["k_s"])
    client._server_id = str(rec["server_id"])
    client._sid_b = encode_server_id(client._server_id)
    if client._state == "sent1":
        client._key = store.load().key
    return client


# -- the Mod ------------------------------------------------------------------------------------------------------
def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get("config", ConfigRecord())


def _refuse(msg: Message, reason: str) -> Message:
    log.warning("admission: refused a %s message: %s", msg.metadata.message_type, reason)
    return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, f"pseudonym admission: {reason}"), reply_to=msg)


def _bytes_field(record: ConfigRecord, name: str) -> bytes:
    value = record.get(name, b"")
    return bytes(value) if isinstance(value, (bytes, bytearray)) else b""


def _credential_store(context: Context, config: ConfigRecord) -> CredentialStore:
    """The node's credential: ``--node-config auth-cred=FILE`` (deployment) or ``<auth_cred_dir>/cred-<pid>.json``."""
    path = context.node_config.get("auth-cred")
    if not path:
        cred_dir = str(config.get("auth_cred_dir", ""))
        if not cred_dir or "partition-id" not in context.node_config:
            raise AuthError("no credential configured (set --node-config auth-cred=FILE)")
        path = os.path.join(cred_dir, f"cred-{int(context.node_config['partition-id'])}.json")
    return FileCredentialStore(Path(str(path)))


def _handshake(msg: Message, context: Context) -> Message:
    """Answer one handshake step; every failure answers random bytes of the right size (indistinguishable)."""
    step_rec = msg.content.config_records[HANDSHAKE_RECORD]
    config = _config(msg)
    step = step_rec.get("step")
    try:
        epoch = int(config["round"])
        store = _credential_store(context, config)
    except (KeyError, TypeError, ValueError, AuthError) as exc:
        log.warning("admission: cannot take part in the handshake: %s", exc)
        store, epoch = None, -1
    context.state[_RUN] = ConfigRecord({"run_id": context.run_id})
    out: dict[str, bytes] = {}
    if step == STEP_START:
        _drop(context, _SESSION)  # a new round: the previous round's session is gone
        _drop(context, _HANDSHAKE)
        msg1 = b""
        if store is not None:
            server_id = str(context.node_config.get("auth-server-id") or config.get("auth_server_id", ""))
            try:
                ctx = RoundContext(context.run_id, epoch, context.node_id, int(step_rec.get("expiry", 0)))
                client = AuthClient(store)
                msg1 = client.start(server_id, ctx)
                _save_handshake(context, client)
            except (AuthError, TypeError, ValueError) as exc:  # no or unreadable credential, server not allowed
                log.warning("admission: cannot start the handshake: %s", exc)
                msg1 = b""
        out["msg1"] = msg1 if len(msg1) == MSG1_LEN else os.urandom(MSG1_LEN)
    elif step == STEP_RESPOND:
        msg3 = b""
        if store is not None:
            try:
                client = _load_handshake(context, store, context.run_id, epoch)
                msg3 = client.respond(_bytes_field(step_rec, "msg2"))
                _save_handshake(context, client)
            except AuthError as exc:  # the credential became unreadable between steps
                log.warning("admission: cannot answer the challenge: %s", exc)
                _drop(context, _HANDSHAKE)
        out["msg3"] = msg3 if len(msg3) == MSG3_LEN else os.urandom(MSG3_LEN)
    elif step == STEP_FINISH:
        ack = os.urandom(ACK_LEN)
        if store is not None:
            client = _load_handshake(context, store, context.run_id, epoch)
            outcome = client.finish(_bytes_field(step_rec, "msg4"))
            ack = outcome.ack
            if outcome.session is not None:
                _save_session(context, outcome.session)
                context.state[_ROSTER_KEY] = ConfigRecord({"key": store.load().roster_public_key or b""})
        _drop(context, _HANDSHAKE)
        out["ack"] = ack
    else:
        return _refuse(msg, "unknown handshake step")
    return Message(content=RecordDict({HANDSHAKE_RECORD: ConfigRecord(out)}), reply_to=msg)


def _required(msg: Message, context: Context) -> bool:
    """Pseudonym admission applies if the message says so, or if this run has used it before (no downgrade)."""
    if _config(msg).get("auth", "none") == "pseudonym":
        return True
    run = context.state.config_records.get(_RUN)
    return run is not None and int(run["run_id"]) == context.run_id


def auth_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """ClientApp Mod: run the handshake when asked; refuse unauthenticated messages; tag replies of the round."""
    if not msg.has_content():
        return call_next(msg, context)
    mtype = msg.metadata.message_type
    if (mtype == "query" and HANDSHAKE_RECORD in msg.content.config_records
            and _config(msg).get("auth", "none") == "pseudonym"):
        return _handshake(msg, context)
    if not _required(msg, context):
        return call_next(msg, context)
    session = _load_session(context)
    if session is None or session.ctx.run_id != context.run_id:
        return _refuse(msg, "no authenticated session for this round")
    rnd = _config(msg).get("round")
    if rnd is not None and (isinstance(rnd, bool) or not isinstance(rnd, int) or rnd != session.ctx.epoch):
        return _refuse(msg, "message is not for this round's session")
    tag_rec = msg.content.config_records.get(TAG_RECORD)
    seq = tag_rec.get("seq") if tag_rec is not None else None
    tag = tag_rec.get("tag") if tag_rec is not None else None
    if not isinstance(seq, int) or not isinstance(tag, (bytes, bytearray)):
        return _refuse(msg, "message carries no session tag")
    del msg.content[TAG_RECORD]
    if not session.check(mtype, seq, content_digest(msg.content), bytes(tag)):
        return _refuse(msg, "bad, replayed or foreign session tag")
    _save_session(context, session)  # the accepted seq is stored before any work (a replay is refused)
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    seq_out, tag_out = session.seal(reply.metadata.message_type, content_digest(reply.content))
    reply.content[TAG_RECORD] = ConfigRecord({"seq": seq_out, "tag": tag_out})
    _save_session(context, session)
    return reply
