"""The consortium admin's ledger tool: ``secagg consortium deploy | register | roles``.

In a deployment across sites the ledger contract belongs to the consortium, not to the
aggregator. Its admin (a hospital board, a trusted operator; one account whose key only
the admin holds) deploys it once with the per-client epsilon budget, and registers the
address of every party: each hospital's own ledger account (``--client``), the
aggregator's, the key holder's and the auditors'. The aggregator's round driver then
attaches to that contract (run config ``ledger-address`` and ``aggregator-key-file``) and
every site pins it (node config ``ledger-address``): the aggregator can neither register
a sybil client nor change the budget, and a driver that points a site at another contract
is refused by the site.

* ``secagg consortium deploy --rpc URL --admin-key-file F --epsilon-budget E
  [--client ADDR]... [--aggregator ADDR] [--key-holder ADDR] [--auditor ADDR]
  [--fund-wei N] [--out FILE]`` deploys, registers and prints (and writes to ``--out``) the
  JSON the sites need: address, chain id, deployment block, admin;
* ``secagg consortium register --rpc URL --address A --admin-key-file F --role ROLE ADDR...
  [--fund-wei N]``: a new hospital (or key holder...) joins: its address gets the role;
* ``secagg consortium committee --rpc URL --address A --admin-key-file F --threshold T
  MEMBER... [--fund-wei N]``: a CKKS decryption committee instead of one key holder: the
  members (member j is the j-th address, the index its node's ``member=j`` names) get the
  committee role and the committee is set up on the contract, once (the contract fixes
  the seed of the common random polynomial then; the members make their key shares when
  a run starts);
* ``secagg consortium roles --rpc URL --address A ADDR...`` prints each address's roles
  (anyone can read them) and, for a committee member, its index.

``--fund-wei`` sends that much ether from the admin's account to each registered address
(for their own transactions) when the chain needs it. Exit codes: 0 done, 2 a named
error (unreadable key file, unreachable node, not the admin...). Keys are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from chain import ChainError, Ledger, Role, redact_url
from deploy._errors import DeploymentError, SettingsError
from deploy._sites import attach_ledger, load_key_file

__all__ = ["ROLE_NAMES", "deploy_consortium", "main", "register_parties", "setup_committee"]

#: Role names of the command line -> role bits of the contract.
ROLE_NAMES: dict[str, Role] = {
    "client": Role.CLIENT,
    "aggregator": Role.AGGREGATOR,
    "key-holder": Role.KEY_HOLDER,
    "auditor": Role.AUDITOR,
    "committee": Role.COMMITTEE,
}


def _web3(url: str) -> Any:
    from web3 import HTTPProvider, Web3

    return Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))


class _RpcBackend:
    """The minimal backend :meth:`chain.Ledger.deploy` needs: a Web3 over JSON-RPC."""

    name = "rpc"

    def __init__(self, url: str) -> None:
        self.w3 = _web3(url)
        self.public_url = redact_url(url)


def _fund(ledger: Ledger, admin: LocalAccount, addresses: Sequence[str], wei: int) -> None:
    from chain._ledger import send_signed

    for address in addresses:
        send_signed(ledger.w3, admin, {"to": address, "value": wei, "gas": 21_000})


def register_parties(
    ledger: Ledger,
    admin: LocalAccount,
    parties: dict[Role, list[str]],
    *,
    fund_wei: int = 0,
) -> None:
    """Give each role to its addresses (one transaction per role), funding them first."""
    if ledger.admin != admin.address:
        raise DeploymentError(f"{admin.address} is not the admin of the ledger {ledger.address}")
    for role, addresses in parties.items():
        if not addresses:
            continue
        if fund_wei:
            _fund(ledger, admin, addresses, fund_wei)
        ledger.register(role, addresses, sender=admin)


def deploy_consortium(
    url: str,
    admin: LocalAccount,
    *,
    epsilon_budget: float,
    parties: dict[Role, list[str]],
    fund_wei: int = 0,
) -> Ledger:
    """Deploy the consortium's ledger with ``admin`` as its admin and register ``parties``."""
    ledger = Ledger.deploy(_RpcBackend(url), admin=admin, epsilon_budget=epsilon_budget)
    register_parties(ledger, admin, parties, fund_wei=fund_wei)
    return ledger


def setup_committee(
    ledger: Ledger,
    admin: LocalAccount,
    members: Sequence[str],
    *,
    threshold: int,
    fund_wei: int = 0,
) -> None:
    """Register ``members`` (member j is ``members[j-1]``) with the committee role and set
    the decryption committee up on ``ledger`` with ``threshold`` (admin only, once)."""
    if len(set(a.lower() for a in members)) != len(members):
        raise SettingsError("a committee member is listed twice")
    if not 0 < threshold <= len(members):
        raise SettingsError(f"threshold must be in [1, {len(members)}], got {threshold}")
    register_parties(ledger, admin, {Role.COMMITTEE: list(members)}, fund_wei=fund_wei)
    ledger.setup_committee(members, threshold=threshold, sender=admin)


def _address(text: str) -> str:
    if not is_address(text):
        raise argparse.ArgumentTypeError(f"not an address: {text!r}")
    return to_checksum_address(text)


def _wei(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg consortium",
        description="the consortium admin's ledger: deploy it, register parties, read roles",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    deploy = commands.add_parser("deploy", help="deploy the consortium's ledger")
    register = commands.add_parser("register", help="give a role to addresses (admin only)")
    committee = commands.add_parser(
        "committee", help="set up a CKKS decryption committee (admin only, once)"
    )
    roles = commands.add_parser("roles", help="print the roles of addresses")
    for command in (deploy, register, committee, roles):
        command.add_argument("--rpc", required=True, help="the ledger node's JSON-RPC URL")
    for command in (deploy, register, committee):
        command.add_argument(
            "--admin-key-file", required=True, type=Path, help="the admin's key (hex), mode 600"
        )
        command.add_argument(
            "--fund-wei", type=_wei, default=0, help="ether (wei) for each registered address"
        )
    deploy.add_argument("--epsilon-budget", required=True, type=float)
    for name in ROLE_NAMES:
        deploy.add_argument(f"--{name}", type=_address, action="append", default=[])
    deploy.add_argument("--out", type=Path, help="also write the ledger's JSON here")
    for command in (register, committee, roles):
        command.add_argument("--address", required=True, type=_address, help="the ledger")
    register.add_argument("--role", required=True, choices=sorted(ROLE_NAMES))
    committee.add_argument("--threshold", required=True, type=int, help="members needed (T)")
    for command in (register, committee, roles):
        command.add_argument("addresses", nargs="+", type=_address, metavar="ADDR")
    return parser


def _describe(ledger: Ledger) -> dict[str, Any]:
    return {
        "address": str(ledger.address),
        "chain_id": int(ledger.chain_id),
        "start_block": int(ledger.start_block),
        "admin": str(ledger.admin),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; exit 0 done, 2 with a named error."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "roles":
            ledger = attach_ledger(args.rpc, args.address)
            shown: dict[str, Any] = {
                a: [name for name, role in ROLE_NAMES.items() if role in ledger.roles_of(a)]
                for a in args.addresses
            }
            info = ledger.committee()
            if info is not None:
                for a in args.addresses:
                    if any(m.lower() == a.lower() for m in info.members):
                        shown[a] = {"roles": shown[a], "committee_member": info.index_of(a)}
            print(json.dumps(shown, indent=2))
            return 0
        admin = load_key_file(args.admin_key_file)
        if args.action == "deploy":
            parties = {
                role: list(getattr(args, name.replace("-", "_")))
                for name, role in ROLE_NAMES.items()
            }
            ledger = deploy_consortium(
                args.rpc,
                admin,
                epsilon_budget=args.epsilon_budget,
                parties=parties,
                fund_wei=args.fund_wei,
            )
            text = json.dumps(_describe(ledger), indent=2)
            if args.out is not None:
                args.out.write_text(text + "\n")
            print(text)
            return 0
        ledger = attach_ledger(args.rpc, args.address)
        if args.action == "committee":
            setup_committee(
                ledger,
                admin,
                list(args.addresses),
                threshold=args.threshold,
                fund_wei=args.fund_wei,
            )
            members = {str(j): a for j, a in enumerate(args.addresses, start=1)}
            print(json.dumps({"committee": members, "threshold": args.threshold}))
            return 0
        register_parties(
            ledger, admin, {ROLE_NAMES[args.role]: list(args.addresses)}, fund_wei=args.fund_wei
        )
        print(json.dumps({"registered": args.role, "addresses": list(args.addresses)}))
        return 0
    except (ChainError, DeploymentError, SettingsError, OSError) as error:
        print(f"secagg consortium: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
