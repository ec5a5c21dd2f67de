"""The ``secagg`` command line: ``secagg audit``, ``secagg node`` and ``secagg data``.

``secagg audit`` is for someone who did not run the federation: given a ledger (a JSON-RPC
URL and the contract address) and the artifact store directory, it re-checks every round
(or one) and exits 0 when clean, 1 with findings, 2 when it cannot audit (and says why).
``--results results.json`` reads the ledger URL, address and store from a run's results.
An in-process ledger lives only inside the process that ran the federation; to audit from
another process run the federation with ``chain=anvil`` (or ``chain=rpc``).

``secagg node`` starts a local anvil node (from the project's ``node_modules``) on a free
loopback port, optionally persisting its state, and prints its URL until interrupted.

``secagg data fetch`` downloads (or ``--from DIR`` imports) the real datasets into the
folder the experiment loaders read; it lives in :mod:`experiments._fetch`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from secagg._audit_report import AuditReport
from secagg._auditor import DEFAULT_EPSILON_TOLERANCE, audit
from secagg._store import LocalDirectoryStore


class _CannotAudit(Exception):
    """The command line's targets cannot be read."""


def _cannot(reason: str, address: str = "") -> AuditReport:
    return AuditReport(
        ledger_address=address, chain_id=None, rounds=(), findings=(), cannot_audit=reason
    )


def _targets(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    url, address, store = args.rpc, args.address, args.store
    if args.results is not None:
        try:
            results = json.loads(Path(args.results).read_text())
        except (OSError, ValueError) as error:
            raise _CannotAudit(f"cannot read {args.results}: {error}") from error
        ledger = results.get("ledger") if isinstance(results, dict) else None
        if not isinstance(ledger, dict):
            raise _CannotAudit(f"{args.results} records no ledger (was it run with chain=none?)")
        url = url or ledger.get("url")
        address = address or ledger.get("address")
        store = store or ledger.get("store")
    return url, address, store


def run_audit(args: argparse.Namespace) -> AuditReport:
    """Attach to the ledger and audit it against the store (never raises on bad targets)."""
    from web3 import HTTPProvider, Web3

    from chain import ChainError, Ledger

    try:
        url, address, store_dir = _targets(args)
    except _CannotAudit as error:
        return _cannot(str(error))
    if not url or not address or not store_dir:
        return _cannot("need --rpc URL, --address ADDR and --store DIR (or --results FILE)")
    if not Path(store_dir).is_dir():
        return _cannot(f"artifact store {store_dir} is not a directory", address)
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
    try:
        if not w3.is_connected():
            return _cannot("cannot reach the ledger's JSON-RPC endpoint", address)
        ledger = Ledger.attach(w3, address)
    except (ChainError, OSError, ValueError) as error:
        return _cannot(f"cannot attach to the ledger: {error}", address)
    return audit(
        ledger,
        LocalDirectoryStore(store_dir),
        round_id=args.round,
        epsilon_tolerance=args.tolerance,
    )


def run_node(args: argparse.Namespace) -> int:
    """Start an anvil node and keep it up until interrupted."""
    from chain import AnvilBackend

    with AnvilBackend(state_file=args.state) as backend:
        print(backend.public_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secagg", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit_cmd = commands.add_parser("audit", help="audit a ledger against an artifact store")
    audit_cmd.add_argument("--rpc", help="the ledger node's JSON-RPC URL")
    audit_cmd.add_argument("--address", help="the ledger contract's address")
    audit_cmd.add_argument("--store", help="the artifact store directory")
    audit_cmd.add_argument("--results", help="read url, address and store from results.json")
    audit_cmd.add_argument("--round", type=int, default=None, help="audit only this round")
    audit_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    audit_cmd.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_EPSILON_TOLERANCE,
        help="absolute epsilon tolerance (plus the ledger's 1e-6 fixed-point rounding)",
    )
    node_cmd = commands.add_parser("node", help="start a local anvil node")
    node_cmd.add_argument("--state", default=None, help="persist the node's state here")
    data_cmd = commands.add_parser(
        "data",
        help="download or import the real datasets (secagg data fetch --help)",
        description="secagg data fetch DATASET... [--from DIR]; see secagg data fetch --help",
    )
    data_cmd.add_argument("args", nargs=argparse.REMAINDER, metavar="fetch ...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "node":
        return run_node(args)
    if args.command == "data":
        from experiments._fetch import main as data_main  # experiments depends on secagg

        return data_main(args.args)
    report = run_audit(args)
    print(report.to_json() if args.json else report.to_table())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
