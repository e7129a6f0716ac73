"""When to start a new key epoch: every K rounds and whenever the participant set changes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochPolicy:
    """Key rotation rule: a new epoch (new CRS seed, new key shares) every ``rotate_every`` rounds or new set."""

    rotate_every: int = 10

    def __post_init__(self) -> None:
        if self.rotate_every < 1:
            raise ValueError("rotate_every must be >= 1")

    def must_rotate(
        self, rounds_in_epoch: int, epoch_participants: Iterable[str] | None, round_participants: Iterable[str]
    ) -> bool:
        """True when no epoch exists, the epoch served ``rotate_every`` rounds, or the participants differ."""
        if epoch_participants is None:
            return True
        return rounds_in_epoch >= self.rotate_every or frozenset(epoch_participants) != frozenset(round_participants)
