"""The key-setup stage of secure aggregation: open a key epoch when due, collect the members' replies, have the
Home Authority certify the roster (with admission), run the threat model's second key exchange.

K1: the opening (CRS of the run and epoch, threat model) out; each node's key setup reply in (its public share, or
in malicious-colluding only a signed commitment to it, and an epoch verification key). With pseudonym admission each
node also endorses its verification key for the HA, which signs the roster of every endorsed key once; only those
keys become members, and clients check the HA's signature themselves. K2 (malicious, malicious-colluding): the
roster and key (or every commitment) out; signed key sketches (or the revealed shares) in. The epoch's last
key-setup message travels with its first train message.
"""

from __future__ import annotations

import logging
import math

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from bastionfl.alloc import trim_freed_memory
from bastionfl.config import Auth, ThreatModel
from bastionfl.config.checks import threshold_rule
from bastionfl.crypto import CryptoError, EpochPolicy, ServerEpoch
from bastionfl.protocol import Key, MessageType, Record, Stage, array_blob, blob_array, config_record
from bastionfl.server.secure import REFUSED, KeyEpoch, SecureState, crypto_threat, drop_out, params_of
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["KeySetupStage", "session_name"]

log = logging.getLogger("bastionfl.server")


def session_name(run_id: int) -> str:
    """The public session string the CRS of every key epoch of a run is derived from."""
    return f"bastionfl/run/{run_id}"


class KeySetupStage:
    """Start a key epoch when ``EpochPolicy`` says so; leaves the epoch's members as the round's nodes."""

    name = Stage.KEY_SETUP

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch = state.epoch
        usable = epoch is not None and epoch.valid and rs.server_round not in epoch.started
        current = epoch.nodes if usable else None  # a retried round never reuses its epoch: clients would refuse
        policy = EpochPolicy(ctx.cfg.secure.key_epoch_rounds)
        if epoch is not None and usable and epoch.threshold is not None:
            # t-of-n: a change of participants is what the threshold absorbs; re-key every K rounds or when the
            # members that answered the last round fall below t + margin
            if epoch.rounds_used < policy.rotate_every and epoch.live >= epoch.threshold + \
                    ctx.cfg.secure.threshold_margin:
                rs.node_ids = epoch.nodes
                rs.metrics["key_epoch"] = epoch.number
                return
        elif epoch is not None and not policy.must_rotate(epoch.rounds_used, current, rs.node_ids):
            rs.metrics["key_epoch"] = epoch.number
            return
        number = (epoch.number + 1) if epoch else 1
        state.epoch, state.current, state.roster = None, None, None
        engine, opening = ServerEpoch.open(params_of(ctx.cfg), crypto_threat(ctx.cfg), session_name(ctx.run_id),
                                           number, threshold_rule(ctx.cfg))  # type: ignore[arg-type]
        names, counts, endorsements = self._collect(ctx, rs, engine, opening, number)
        members = self._certify(ctx, rs, number, endorsements) if endorsements is not None else None
        try:
            proposal = engine.proposal(members)
        except CryptoError as exc:
            raise RoundFailed(f"key setup refused: {exc}") from None
        order = sorted({name for name in names.values() if members is None or name in members})
        index = {name: i for i, name in enumerate(order)}
        member_nodes = {node: index[name] for node, name in names.items() if name in index}
        if len(member_nodes) < ctx.cfg.secure.min_members:
            raise RoundFailed(f"key setup: {len(member_nodes)} member(s), fewer than min_members "
                              f"{ctx.cfg.secure.min_members}")
        key_message = proposal
        if ctx.cfg.secure.threat_model is not ThreatModel.HONEST_BUT_CURIOUS:
            key_message = self._second_exchange(ctx, rs, engine, proposal, member_nodes, number)
        norm = math.fsum(counts[n] for n in member_nodes)
        state.epoch = KeyEpoch(number, engine, member_nodes, norm, key_message, rs.server_round,
                               live=len(member_nodes))
        if engine.threshold is not None:
            dealt = engine.take_dealt_shares()  # the boxes are held once: in their recipients' messages
            state.epoch.dealt = {node: dealt[i] for node, i in member_nodes.items()}
            rs.metrics["threshold"] = engine.threshold
        rs.node_ids = sorted(member_nodes)
        rs.metrics["key_epoch"] = number
        rs.metrics["epoch_members"] = len(member_nodes)
        trim_freed_memory("key setup")  # the replies and the dealing's working copies are gone: give their pages back

    def _collect(self, ctx: ServerContext, rs: RoundState, engine: ServerEpoch, opening: bytes,
                 number: int) -> tuple[dict[int, bytes], dict[int, float], dict[int, tuple[bytes, bytes]] | None]:
        """K1: every node's key setup reply; a malformed one leaves its node out of the epoch."""
        xmk = ArrayRecord({Key.OPENING: blob_array(opening)})
        meta = ConfigRecord({Key.EPOCH: number, Key.THREAT_MODEL: str(ctx.cfg.secure.threat_model)})
        config = config_record(ctx.cfg, rs.server_round)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, MessageType.XMK_KEYGEN, rs.node_ids,
            lambda _n: RecordDict({Record.XMK: xmk, Record.XMK_CONFIG: meta, Record.CONFIG: config}),
            group_id=f"{rs.server_round}.key")
        certify = ctx.cfg.admission.mode is Auth.PSEUDONYM and ctx.cfg.secure.threat_model is not \
            ThreatModel.HONEST_BUT_CURIOUS
        names: dict[int, bytes] = {}
        counts: dict[int, float] = {}
        endorsements: dict[int, tuple[bytes, bytes]] = {}
        for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):
            node = reply.metadata.src_node_id
            try:
                blobs = reply.content[Record.XMK]
                name = engine.add_key_reply(array_blob(blobs[Key.KEY_REPLY]))
                if certify:
                    endorsements[node] = (array_blob(blobs[Key.VERIFICATION_KEY]), array_blob(blobs[Key.ENDORSEMENT]))
                counts[node] = float(reply.content[Record.METRICS][Key.NUM_EXAMPLES])
            except REFUSED as exc:
                log.warning("key setup: refused a node's key setup reply (%s); leaving it out", exc)
                failed.append(node)
                continue
            names[node] = name
        drop_out(ctx, rs, Stage.KEYGEN, sorted(set(failed)), exclude=False)
        return names, counts, (endorsements if certify else None)

    def _certify(self, ctx: ServerContext, rs: RoundState, number: int,
                 endorsements: dict[int, tuple[bytes, bytes]]) -> frozenset[bytes]:
        """Relay each node's endorsed key to the Home Authority and get the epoch's signed roster back."""
        from bastionfl.auth import AuthError, SignedRoster
        from bastionfl.server.admission import AdmissionState

        admission = ctx.states.get(AdmissionState)
        sessions = admission.sessions or {}
        if admission.server is None:
            raise RoundFailed("key setup: a certified roster needs the admission stage in this round")
        relay, run_id = admission.server.relay, int(ctx.grid.run.run_id)
        refused = 0
        for node, (vk, tag) in endorsements.items():
            session = sessions.get(node)
            try:
                if session is None or session.handle is None or not relay.register_epoch_key(
                        session.handle, number, vk, tag):
                    refused += 1
            except AuthError as exc:
                raise RoundFailed(f"key setup: the Home Authority did not take an epoch key ({exc})") from None
        if refused:
            rs.events.append(f"key setup: the Home Authority refused {refused} epoch key(s)")
        try:
            roster = SignedRoster.from_bytes(relay.sign_roster(run_id, number))
        except AuthError as exc:
            raise RoundFailed(f"key setup: no certified roster ({exc})") from None
        ctx.states.get(SecureState).roster = roster.to_bytes()
        return roster.members

    def _second_exchange(self, ctx: ServerContext, rs: RoundState, engine: ServerEpoch, proposal: bytes,
                         members: dict[int, int], number: int) -> bytes:
        """K2: roster and key (or commitments) out; every member's signed sketch (or reveal) must come back."""
        roster = ctx.states.get(SecureState).roster
        blobs = {Key.PROPOSAL: blob_array(proposal)}
        if roster is not None:
            blobs[Key.ROSTER] = blob_array(roster)
        xmk = ArrayRecord(blobs)
        meta = ConfigRecord({Key.EPOCH: number, Key.THREAT_MODEL: str(ctx.cfg.secure.threat_model)})
        config = config_record(ctx.cfg, rs.server_round)

        def on_reply(reply: Message) -> bool:
            try:
                engine.add_key_response(array_blob(reply.content[Record.XMK][Key.KEY_RESPONSE]))
                if engine.threshold is not None:  # its boxes are copied into their recipients' messages here
                    engine.add_dealing(array_blob(reply.content[Record.XMK][Key.DEALING]))
            except REFUSED as exc:
                log.warning("key setup: refused a key response (%s)", exc)
                return False
            return True

        # each reply is taken as it arrives and kept by no one: a t-of-n dealing is never held twice (reply, relay)
        failed = rs.messenger(ctx).exchange_streaming(
            self.name, MessageType.XMK_KEY_PROPOSAL, sorted(members),
            lambda _n: RecordDict({Record.XMK: xmk, Record.XMK_CONFIG: meta, Record.CONFIG: config}),
            group_id=f"{rs.server_round}.key2", on_reply=on_reply)
        if failed:  # every member's response is needed to confirm the key: leave the silent ones out and re-key
            drop_out(ctx, rs, Stage.KEYGEN, sorted(set(failed)), exclude=True)
            raise RoundFailed(f"key setup: {len(set(failed))} member(s) gave no key response; re-keying")
        try:
            return engine.confirmation()
        except CryptoError as exc:
            raise RoundFailed(f"key setup refused: {exc}") from None
