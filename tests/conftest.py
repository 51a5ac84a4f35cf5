"""Shared pytest setup: makes tests/ helpers importable and locates ../shared/data.

    pytest -q                 # everything, real-model tests included
    pytest -q -m "not slow"   # fast tests only
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not there (the shared data sits beside the repo in CI)")
    return SHARED_DATA
