"""The key holder's site (CKKS): it makes the key itself and releases each round's sum once.

* ``secagg.v1.join``: composes the run's config, generates the CKKS key pair **on this
  site** and replies with its ledger address and the *public* context only (the secret
  key never leaves this node);
* ``secagg.v1.release``: receives the round's manifest, the published aggregate and the
  participants' committed blobs, puts them in its *own* store and runs
  :meth:`secagg.KeyHolderParty.reveal` against the ledger with its own account: the
  manifest must be the one on chain, every blob must match its on-chain commitment, the
  blobs must recombine byte for byte to the aggregate whose digest was published; only
  then it reserves the release on chain, decrypts once (flooded) and attests. In a merkle
  round (``chain.commit_mode=merkle``) the request also carries the round's leaf set (the
  commitments under the root, checked against it) and the aggregator's signed publication,
  which the key holder sends with its reservation (``reserveAndPublish``, one transaction),
  as the in-process key holder does.

Threat model: as :class:`secagg.KeyHolderParty`; the aggregator cannot make it decrypt a
single client's blob (the recombination check) nor a second time (the on-chain
reservation). Between messages its secrets stay on its own node (:meth:`export_state`
into ``Context.state``, docs/architecture.md "Deployment on Flower"); they are never sent.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import Ledger
from deploy._commit_modes import (
    LEAF_SET,
    has_publication,
    publication_from,
    publication_participants,
)
from deploy._errors import DeploymentError
from deploy._sites import SiteAccounts, SitePolicy, SiteView, compose_run_config
from deploy._wire import JOIN, RELEASE, Scalar, WireMessage
from secagg import KeyHolderParty, LocalDirectoryStore, RoundManifest, build_scheme
from secagg._hydra import scheme_class

ROLE_KEY_HOLDER = "keyholder"


class KeyHolderSite:
    """The single key holder of a CKKS federation (``secagg.committee_size=1``)."""

    def __init__(
        self,
        *,
        account: LocalAccount | None = None,
        store_dir: Path | None = None,
        policy: SitePolicy | None = None,
    ) -> None:
        self.account: LocalAccount = account or Account.create()
        self.policy = policy or SitePolicy()
        if store_dir is None:
            store_dir = Path(tempfile.mkdtemp(prefix="secagg-keyholder-"))
            weakref.finalize(self, shutil.rmtree, store_dir, ignore_errors=True)
        self.store = LocalDirectoryStore(store_dir)
        self.scheme: Any = None
        self._ledger: Ledger | None = None
        self._pinned: str | None = None  # the contract joined (restored in a fresh process)
        self._overrides: str | None = None

    def __repr__(self) -> str:
        return f"KeyHolderSite(address={self.account.address})"

    def handle(self, message: WireMessage) -> WireMessage:
        if message.type == JOIN:
            return self.join(message)
        if message.type == RELEASE:
            return self.release(message)
        raise DeploymentError(f"a key holder does not answer {message.type}")

    def export_state(self) -> dict[str, Scalar]:
        """What must survive between messages when each runs in a fresh process (Flower 1.42
        SuperNodes): the run's config and the key holder's secrets. It stays on this node
        (``Context.state``, held by its own SuperNode); nothing reads it but
        :meth:`restore_state`."""
        state: dict[str, Scalar] = {}
        if self._overrides is not None:
            state["overrides"] = self._overrides
        if self.scheme is not None and self.scheme.key_holder is not None:
            state["secret"] = self.scheme.key_holder.export_secret()
        if self._pinned is not None:
            state["ledger_address"] = self._pinned
        return state

    def restore_state(self, state: Mapping[str, Scalar]) -> None:
        """Take up the key :meth:`export_state` saved (in a fresh process)."""
        from secagg.ckks import KeyHolder

        saved = WireMessage(RELEASE, fields=dict(state))
        if "ledger_address" in state and self._pinned is None:
            self._pinned = saved.text("ledger_address")
        if self.scheme is not None or "secret" not in state:
            return
        self._overrides = saved.text("overrides")
        cfg, _ = compose_run_config(_lines(self._overrides))
        scheme: Any = build_scheme(cfg.secagg)
        scheme.key_holder = KeyHolder.restore(
            params=scheme.params, policy=scheme.policy, secret=saved.blob("secret")
        )
        scheme.install_public_context(scheme.key_holder.public_context_bytes())
        self.scheme = scheme

    def join(self, message: WireMessage) -> WireMessage:
        self._overrides = message.text("overrides")
        cfg, _ = compose_run_config(
            [line for line in message.text("overrides").splitlines() if line]
        )
        fields: dict[str, Any] = {"role": ROLE_KEY_HOLDER, "address": str(self.account.address)}
        if scheme_class(cfg.secagg.name).releases_via_key_holder:
            if int(getattr(cfg.secagg, "committee_size", 1)) != 1:
                raise DeploymentError(
                    "a run with a decryption committee (secagg.committee_size > 1) has no "
                    "key holder: its members run as role=committee nodes (deploy._committee)"
                )
            if self.scheme is None:
                self.scheme = build_scheme(cfg.secagg)  # the key pair is made here
            fields["public_context"] = bytes(self.scheme.public_context)
        return WireMessage(JOIN, fields=fields)

    def release(self, message: WireMessage) -> WireMessage:
        if self.scheme is None:
            raise DeploymentError("this key holder holds no CKKS key for the run")
        round_id = message.integer("round")
        # its own ledger endpoint and the contract it serves (node config), never just
        # the driver's word: on a ledger the aggregator controls, "committed" blobs and
        # the one-release reservation would mean nothing
        self._ledger = self.policy.ledger(
            self._ledger,
            url=message.text("ledger_url"),
            address=message.text("ledger_address"),
            start_block=message.integer("start_block"),
            pinned=self._pinned,
        )
        self._pinned = self._ledger.address
        manifest_bytes = message.blob("manifest")
        self.store.put(manifest_bytes)
        self.store.put(bytes(self.scheme.public_context))
        count = message.integer("blobs")
        for index in range(count):
            self.store.put(message.blob(f"blob.{index}"))
        if LEAF_SET in message.fields:  # merkle: checked against the root when read
            self.store.put(message.blob(LEAF_SET))
        manifest = RoundManifest.from_bytes(manifest_bytes)
        view = SiteView.for_manifest(
            self._ledger, self.store, manifest, parties=SiteAccounts(key_holder=self.account)
        )
        # merkle: the aggregator's signed publication, sent with the reservation
        publication = publication_from(message) if has_publication(message) else None
        if publication is not None:
            published = publication_participants(self._ledger, publication)
        else:
            published = list(self._ledger.round_info(round_id).participants or ())
        participants = [view.client_id_of(a) for a in published]
        session = self.scheme.start_round(
            round_id=round_id, client_ids=[c.client_id for c in manifest.clients], dim=manifest.dim
        )
        party = KeyHolderParty(consortium=view.as_consortium(), attests=True)
        total, _ = party.reveal(
            round_id,
            manifest,
            session,
            message.blob("aggregate"),
            survivors=participants,
            publication=publication,
        )
        return WireMessage(RELEASE, arrays={"total": np.asarray(total, dtype=np.float64)})


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


__all__ = ["ROLE_KEY_HOLDER", "KeyHolderSite"]
