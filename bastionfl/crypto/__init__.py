"""xMK-CKKS for BastionFL: multi-key CKKS on stock TenSEAL (``tenseal.sealapi``) with collaborative decryption.

One key epoch: ``CrsSeed.from_session`` → each client ``KeyShare.generate`` and sends ``public_share()`` →
server ``AggregatedPublicKey.aggregate`` and publishes it → clients ``accept`` it. One round: clients
``encrypt_vector`` → server ``StreamingAggregator.add`` … ``result()`` → ``decryption_request(round)`` → each client
``decryption_share(request, own_update)`` → server ``fuse`` (or ``weighted_mean``). Pure library: numpy + tenseal.
"""

from .aggregation import Aggregate, StreamingAggregator
from .client_epoch import ClientEpoch
from .commitment import MemberEntry, UploadCommitment
from .crs import CrsSeed
from .decryption import DecryptionRequest, DecryptionShare, fuse, weighted_mean
from .encryption import EncryptedVector, encrypt_vector
from .epoch_messages import (
    EpochConfirmation,
    EpochOpening,
    EpochProposal,
    KeyResponse,
    KeySetupReply,
)
from .epochs import EpochPolicy
from .errors import (
    BackendError,
    CryptoError,
    CryptoFormatError,
    EpochError,
    IncompleteShareSetError,
    ParameterError,
    ProtocolStateError,
    RangeCheckError,
    ReplayError,
    RosterError,
    VerificationError,
)
from .keys import AggregatedPublicKey, KeyShare, PublicKeyShare
from .params import Params, custom_params, get_profile
from .round_messages import (
    CommitmentList,
    RoundConfirmation,
    RoundProposal,
    RoundShare,
    TranscriptSignature,
    Upload,
)
from .server_epoch import ServerEpoch
from .server_round import ServerRound
from .threat import DEFAULT_THREAT_MODEL, ClientPolicy, ThreatModel

__all__ = [
    "DEFAULT_THREAT_MODEL",
    "Aggregate",
    "AggregatedPublicKey",
    "BackendError",
    "ClientEpoch",
    "ClientPolicy",
    "CommitmentList",
    "CrsSeed",
    "CryptoError",
    "CryptoFormatError",
    "DecryptionRequest",
    "DecryptionShare",
    "EncryptedVector",
    "EpochConfirmation",
    "EpochError",
    "EpochOpening",
    "EpochPolicy",
    "EpochProposal",
    "IncompleteShareSetError",
    "KeyResponse",
    "KeySetupReply",
    "KeyShare",
    "MemberEntry",
    "ParameterError",
    "Params",
    "ProtocolStateError",
    "PublicKeyShare",
    "RangeCheckError",
    "ReplayError",
    "RosterError",
    "RoundConfirmation",
    "RoundProposal",
    "RoundShare",
    "ServerEpoch",
    "ServerRound",
    "StreamingAggregator",
    "ThreatModel",
    "TranscriptSignature",
    "Upload",
    "UploadCommitment",
    "VerificationError",
    "custom_params",
    "encrypt_vector",
    "fuse",
    "get_profile",
    "weighted_mean",
]
