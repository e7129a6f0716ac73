"""Pseudonymous client admission (FL-VSP-AKA): client, FL-server and Home Authority sides, no Flower inside.

Client:      ``AuthClient(store).start(server_id, ctx) -> msg1``; ``.respond(msg2) -> msg3``;
             ``.finish(msg4) -> ClientOutcome(ack, session | None)``.
FL server:   ``AuthServer(server_id, relay).begin(ctx)`` -> ``ServerHandshake``: ``.challenge(msg1) -> msg2``;
             ``.confirm(msg3) -> msg4``; ``.accept(ack) -> Session | None``.
Relay:       ``HARelay`` protocol; ``LocalRelay(ha, server_id)`` in-process, ``HttpRelay`` over HTTPS to the HA service
             (``bastionfl.deploy.ha_service``).
Later messages: ``Session.seal / Session.check`` or ``mac_message / verify_message`` with ``digest_records``.
See docs/auth.md.
"""

from .client import AuthClient, ClientOutcome, CredentialStore
from .credential import ClientCredential, FileCredentialStore, MemoryCredentialStore
from .errors import AuthError, CredentialError, MalformedInput, RateLimited
from .ha import HomeAuthority, LocalRelay, RateLimits
from .http_relay import HttpRelay
from .messages import ACK_LEN, MSG1_LEN, MSG2_LEN, MSG3_LEN, MSG4_LEN
from .primitives import RoundContext
from .roster import SignedRoster, endorse_epoch_key
from .server import AuthServer, ChallengeReply, ConfirmReply, HARelay, ServerHandshake
from .session import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Session, digest_records, mac_message, verify_message
from .store import HAStore, load_or_create_kek

__all__ = [
    "ACK_LEN",
    "CLIENT_TO_SERVER",
    "MSG1_LEN",
    "MSG2_LEN",
    "MSG3_LEN",
    "MSG4_LEN",
    "SERVER_TO_CLIENT",
    "AuthClient",
    "AuthError",
    "AuthServer",
    "ChallengeReply",
    "ClientCredential",
    "ClientOutcome",
    "ConfirmReply",
    "CredentialError",
    "CredentialStore",
    "FileCredentialStore",
    "HARelay",
    "HttpRelay",
    "HAStore",
    "HomeAuthority",
    "LocalRelay",
    "MalformedInput",
    "MemoryCredentialStore",
    "RateLimited",
    "RateLimits",
    "RoundContext",
    "ServerHandshake",
    "SignedRoster",
    "endorse_epoch_key",
    "Session",
    "digest_records",
    "load_or_create_kek",
    "mac_message",
    "verify_message",
]
