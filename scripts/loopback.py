"""Start a whole deployment on 127.0.0.1 and keep it up until Ctrl-C.

anvil (the ledger), ``flower-superlink --insecure`` and one ``flower-supernode`` per site:
4 heart-disease hospitals (node config ``role='hospital' partition-id=K data-dir=...
key-file=...``) and a key holder (``role='keyholder'``), or with ``--committee K`` K
decryption committee members (``role='committee' member=j``), each with its own fresh
ledger key in ``WORKDIR/keys`` (mode 0600). Prints the ``flwr run`` command to start a
federation.

    python scripts/loopback.py [--workdir outputs/loopback] [--hospitals 4] [--data-dir DIR]
        [--committee K [--threshold T]]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from deploy._loopback import Loopback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="outputs/loopback", type=Path)
    parser.add_argument("--hospitals", default=4, type=int)
    parser.add_argument("--data-dir", default=None, help="each hospital's data folder")
    parser.add_argument("--committee", default=0, type=int, help="K committee members")
    parser.add_argument("--threshold", default=None, type=int, help="T (default K - 1)")
    args = parser.parse_args()
    loopback = Loopback(
        workdir=args.workdir.resolve(),
        hospital_data_dirs=[args.data_dir] * args.hospitals,
        key_holder=args.committee == 0,
        committee=args.committee,
    )
    run_config = 'ledger-url="{url}"'
    if args.committee:
        threshold = args.threshold or max(1, args.committee - 1)
        run_config += (
            f' key-holder=false committee={args.committee} overrides="dataset=heart_disease,'
            "model=logreg,federation=heart_disease,dp=off,secagg=ckks,"
            f"secagg.committee_size={args.committee},secagg.committee_threshold={threshold},"
            'chain=anvil"'
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with loopback:
        print(f"ledger (anvil): {loopback.ledger_url}")
        print(f"SuperLink:      {loopback.control_address}")
        print(f"logs and keys:  {loopback.workdir}")
        print("start a federation from the repository root with:")
        print(
            f"  FLWR_HOME={loopback.flwr_home} flwr run . loopback --stream "
            f"--run-config '{run_config.format(url=loopback.ledger_url)}'"
        )
        try:
            while all(p.poll() is None for p in loopback.processes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
