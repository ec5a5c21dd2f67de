"""The ``secagg`` command line: ``secagg audit``, ``node``, ``data`` and ``consortium``.

``secagg audit`` is for someone who did not run the federation: given a ledger (a JSON-RPC
URL and the contract address) and the artifact store directory, it re-checks every round
(or one) and exits 0 when clean, 1 with findings, 2 when it cannot audit (and says why).
``--results results.json`` reads the ledger URL, address and store from a run's results,
and prints the run's empirical privacy audit (``final.privacy_audit``) when it has one.
``secagg audit`` never shows a traceback: anything unexpected (an unreadable or malformed
``results.json``, a store that is not a directory or holds no manifest of the ledger's
rounds, a failure inside the audit) is reported as "cannot audit" with exit code 2.
An in-process ledger lives only inside the process that ran the federation; to audit from
another process run the federation with ``chain=anvil`` (or ``chain=rpc``).

``secagg node`` starts a local anvil node (from the project's ``node_modules``) on a free
loopback port (or ``--port``), optionally persisting its state, and prints its URL; it
stops the node on SIGINT or SIGTERM (exit 0) and exits 1 if the node dies.

``secagg data fetch`` downloads (or ``--from DIR`` imports) the real datasets into the
folder the experiment loaders read; it lives in :mod:`experiments._fetch`.

``secagg consortium deploy|register|committee|roles`` is the consortium admin's ledger
tool for a deployment across sites (deploy the contract, register each party's address,
set up a decryption committee); it lives in :mod:`deploy._consortium`.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from secagg._audit_report import AuditReport
from secagg._auditor import DEFAULT_EPSILON_TOLERANCE, audit
from secagg._errors import SecAggError
from secagg._safejson import loads_untrusted
from secagg._store import LocalDirectoryStore, read_regular_file

#: Largest ``results.json`` the command reads, and its deepest nesting.
MAX_RESULTS_BYTES = 64 * 2**20
MAX_RESULTS_DEPTH = 64

# ``secagg node`` checks its anvil every NODE_POLL_S seconds; this many misses: it died.
NODE_POLL_S = 1.0
NODE_MISSES = 3


class _CannotAudit(Exception):
    """The command line's targets cannot be read."""


def _cannot(reason: str, address: str = "") -> AuditReport:
    return AuditReport(
        ledger_address=address, chain_id=None, rounds=(), findings=(), cannot_audit=reason
    )


def _text_field(source: str, name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _CannotAudit(f"{source}: {name} must be a string, got {type(value).__name__}")


def _targets(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    url, address, store = args.rpc, args.address, args.store
    if args.results is not None:
        try:
            results = loads_untrusted(
                read_regular_file(args.results, max_bytes=MAX_RESULTS_BYTES),
                max_bytes=MAX_RESULTS_BYTES,
                max_depth=MAX_RESULTS_DEPTH,
                what=str(args.results),
            )
        except (OSError, SecAggError) as error:
            raise _CannotAudit(f"cannot read {args.results}: {error}") from error
        ledger = results.get("ledger") if isinstance(results, dict) else None
        if not isinstance(ledger, dict):
            raise _CannotAudit(
                f"{args.results} records no ledger: a chain=none run keeps its ledger in "
                "memory, gone with the run, so there is nothing to re-check from outside; "
                "the run's own final audit is its final.audit"
            )
        url = url or _text_field(args.results, "ledger.url", ledger.get("url"))
        address = address or _text_field(args.results, "ledger.address", ledger.get("address"))
        store = store or _text_field(args.results, "ledger.store", ledger.get("store"))
    return url, address, store


def run_audit(args: argparse.Namespace) -> AuditReport:
    """Attach to the ledger and audit it against the store (never raises on bad targets)."""
    from web3 import HTTPProvider, Web3

    from chain import ChainError, Ledger, redact_url

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
            return _cannot(
                f"cannot reach the ledger's JSON-RPC endpoint at {redact_url(url)} (is the "
                "node still running? point --rpc URL at the node that holds the ledger)",
                address,
            )
        ledger = Ledger.attach(w3, address)
    except (ChainError, OSError, ValueError) as error:
        return _cannot(f"cannot attach to the ledger: {error}", address)
    return audit(
        ledger,
        LocalDirectoryStore(store_dir),
        round_id=args.round,
        epsilon_tolerance=args.tolerance,
    )


def privacy_audit_lines(results_path: str) -> list[str]:
    """The one-run audit of ``final.privacy_audit``, one line per audited party.

    These bounds are reported by the party that holds the canaries' secret bits (each
    client for dp=sample, the releasing party for dp=client); the auditor prints them
    beside the claimed epsilon but cannot re-check them.
    """
    try:
        results = loads_untrusted(
            read_regular_file(results_path, max_bytes=MAX_RESULTS_BYTES),
            max_bytes=MAX_RESULTS_BYTES,
            max_depth=MAX_RESULTS_DEPTH,
            what=results_path,
        )
        audits = results["final"]["privacy_audit"] or {}
        lines = [
            f"  {name}: epsilon >= {a['epsilon_lower']:.3f} at {a['confidence']:.0%} confidence "
            f"(claimed {a['epsilon_claimed']:.3f}; {a['correct']}/{a['guesses']} guesses right, "
            f"{a['canaries']} canaries)"
            for name, a in audits.items()
        ]
    except (OSError, SecAggError, ValueError, KeyError, TypeError, AttributeError):
        return []
    if not lines:
        return []
    return ["empirical privacy audit (one run, as reported by the run, not re-checked):", *lines]


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # leave the ``with`` block: anvil is stopped (state dumped)


def run_node(args: argparse.Namespace) -> int:
    """Start an anvil node and keep it up until SIGINT or SIGTERM (then stop it, exit 0);
    exit 1 if the node stops answering on its own."""
    from chain import AnvilBackend, ChainError

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        backend = AnvilBackend(state_file=args.state, port=args.port)
    except ChainError as error:
        print(f"secagg node: {error}", file=sys.stderr)
        return 2
    try:  # a signal may arrive at any point once the URL is out: always stop anvil, exit 0
        with backend:
            print(backend.public_url, flush=True)
            misses = 0
            while misses < NODE_MISSES:
                time.sleep(NODE_POLL_S)
                misses = 0 if backend.w3.is_connected() else misses + 1
    except KeyboardInterrupt:
        return 0
    print(f"secagg node: anvil at {backend.public_url} stopped answering", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    summary = (__doc__ or "").split("\n\n")[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="secagg", description=summary)
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
        type=_tolerance,
        default=DEFAULT_EPSILON_TOLERANCE,
        help="absolute epsilon tolerance (plus the ledger's 1e-6 fixed-point rounding)",
    )
    node_cmd = commands.add_parser("node", help="start a local anvil node")
    node_cmd.add_argument("--state", default=None, help="persist the node's state here")
    node_cmd.add_argument(
        "--port", type=int, default=None, help="listen on this loopback port (default: a free one)"
    )
    data_cmd = commands.add_parser(
        "data",
        help="download or import the real datasets (secagg data fetch --help)",
        description="secagg data fetch DATASET... [--from DIR]; see secagg data fetch --help",
    )
    data_cmd.add_argument("args", nargs=argparse.REMAINDER, metavar="fetch ...")
    consortium_cmd = commands.add_parser(
        "consortium",
        help="the consortium admin's ledger: deploy, register parties (--help for more)",
        description="secagg consortium deploy|register|committee|roles ...; see --help",
        add_help=False,
    )
    consortium_cmd.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="deploy|register|committee|roles"
    )
    return parser


def _tolerance(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; ``audit`` exits 0 clean, 1 findings, 2 cannot audit."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["consortium"]:  # its own parser, --help included
        from deploy._consortium import main as consortium_main  # deploy depends on secagg

        return consortium_main(given[1:])
    args = build_parser().parse_args(given)
    if args.command == "node":
        return run_node(args)
    if args.command == "data":
        from experiments._fetch import main as data_main  # experiments depends on secagg

        return data_main(args.args)
    try:
        report = run_audit(args)
        output = report.to_json() if args.json else report.to_table()
        if args.results is not None and not args.json:
            output = "\n".join([output, *privacy_audit_lines(args.results)])
    except Exception as error:  # the audit command reports; it never shows a traceback
        report = _cannot(f"unexpected {type(error).__name__}: {error}"[:500])
        output = report.to_json() if args.json else report.to_table()
    print(output)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
