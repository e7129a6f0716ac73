"""xMK-CKKS for BastionFL: multi-key CKKS on stock TenSEAL (``tenseal.sealapi``) with collaborative decryption.

Protocol engine (bytes in, bytes out; the Flower layer only marshals), for the three ``ThreatModel`` settings:
server ``ServerEpoch.open`` -> clients ``ClientEpoch.open`` -> ``ServerEpoch.proposal`` -> ``on_key_proposal``
(-> ``confirmation`` -> ``on_key_confirmation``); a round: ``upload`` (-> ``commitment_list`` ->
``on_commitment_list``) -> ``ServerRound.proposal`` -> ``on_round_proposal`` (-> ``confirmation`` ->
``on_round_confirmation``) -> ``ServerRound.weighted_mean``. t-of-n decryption (``ThresholdRule``): the member also
deals (``deal_shares`` -> ``ServerEpoch.add_dealing`` -> ``dealt_shares`` -> ``on_dealt_shares``) and a round's
confirmation names an attempt and a decrypting set. See docs/crypto.md.

Honest-but-curious building blocks (the previous API, still used by the Flower glue): ``KeyShare``,
``AggregatedPublicKey``, ``encrypt_vector``, ``StreamingAggregator``, ``DecryptionRequest``, ``fuse``.
Pure library: numpy, tenseal, cryptography.
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
from .threshold import ThresholdRule, c_max
from .threshold_messages import DealtShares, ShareDealing

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
    "DealtShares",
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
    "ShareDealing",
    "StreamingAggregator",
    "ThreatModel",
    "ThresholdRule",
    "TranscriptSignature",
    "Upload",
    "UploadCommitment",
    "VerificationError",
    "c_max",
    "custom_params",
    "encrypt_vector",
    "fuse",
    "get_profile",
    "weighted_mean",
]
