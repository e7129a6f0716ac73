"""Fixtures of the auth tests: an SQLite-backed Home Authority on a settable clock."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test modules share auth_helpers.py
from auth_helpers import GENEROUS, Clock  # noqa: E402

from bastionfl.auth import HomeAuthority


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "ha.db"


@pytest.fixture
def ha(db_path, kek, clock) -> HomeAuthority:
    authority = HomeAuthority.open(db_path, kek, limits=GENEROUS, clock=clock)
    yield authority
    authority.store.close()
