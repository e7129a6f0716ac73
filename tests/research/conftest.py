"""Shared test helpers of the auth tests (auth_helpers.py) are importable here too."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "auth"))
