"""Rebuild chain/artifacts/*.json from chain/contracts/*.sol with the pinned npm solc."""

from __future__ import annotations

import sys

from chain._build import build_artifacts


def main() -> int:
    """Compile every ledger contract and write its artifact."""
    for path in build_artifacts():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
