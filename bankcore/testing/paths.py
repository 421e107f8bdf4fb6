"""The repository's root, for tests that read its files or run its scripts: one place, so a test
module's depth under tests/ does not matter."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
