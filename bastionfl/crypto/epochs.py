"""When to start a new key epoch: every K rounds and whenever the participant set changes (the one place of the
rotation rule; the Flower layer calls it, and the clients' share cap is derived from it)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ParameterError
from .threat import DEFAULT_THREAT_MODEL, ClientPolicy, ThreatModel


@dataclass(frozen=True)
class EpochPolicy:
    """Key rotation rule: a new epoch (new CRS seed, new key shares) every ``rotate_every`` rounds or new set."""

    rotate_every: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.rotate_every, bool) or not isinstance(self.rotate_every, numbers.Integral) \
                or not 1 <= self.rotate_every <= 100_000:
            raise ParameterError("rotate_every must be an integer in [1, 100000]")

    def must_rotate(
        self, rounds_in_epoch: int, epoch_participants: Iterable[str] | None, round_participants: Iterable[str]
    ) -> bool:
        """True when no epoch exists, the epoch served ``rotate_every`` rounds, or the participants differ."""
        if epoch_participants is None:
            return True
        return rounds_in_epoch >= self.rotate_every or frozenset(epoch_participants) != frozenset(round_participants)

    def client_policy(
        self, threat_model: ThreatModel | str = DEFAULT_THREAT_MODEL, min_members: int = 3, min_uploads: int = 3,
        require_certified_roster: bool = False, threshold: object = None,
    ) -> ClientPolicy:
        """The clients' policy for epochs under this rule: at most ``rotate_every`` shares per key epoch."""
        return ClientPolicy(ThreatModel.parse(threat_model), min_members, min_uploads, self.rotate_every,
                            require_certified_roster, threshold)
