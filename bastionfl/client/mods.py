"""The Mods every BastionFL ClientApp runs, in order (the admission Mod checks and tags messages)."""

from __future__ import annotations

from typing import Callable

from flwr.app import Context, Message

from bastionfl.client.auth_mod import auth_mod

__all__ = ["CLIENT_MODS"]

Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]

CLIENT_MODS: list[Mod] = [auth_mod]
