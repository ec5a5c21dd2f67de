"""Test-wide configuration: real data come from ``../shared/data`` via ``$SECAGG_DATA_DIR``.

The loaders look in ``dataset.data_dir``, then ``$SECAGG_DATA_DIR``, then the per-user cache
that ``secagg data fetch`` fills. Tests never download: when the variable is unset and the
shared copies sit beside the checkout, it is pointed at them before any test runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("SECAGG_DATA_DIR") and SHARED_DATA.is_dir():
        os.environ["SECAGG_DATA_DIR"] = str(SHARED_DATA)
