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

With ``dp=client`` (central noise) the key holder is the releasing party: it adds the
Gaussian noise ``N(0, (sigma C / n)^2)`` to the weighted sum inside its release, before
anything is stored, attested or returned, with sigma and C from the federation policy the
manifest commits, which must be the one its own config gives; it refuses a manifest of
another DP mode (a release without noise) and re-accounts the federation's event chain the
driver sends (``federation_events``): it must be unbroken, end at the manifest's
``federation_event``, account exactly the rounds this key holder released (the ledger's
attested reveals), and leave room in the budget for this release.

Threat model: as :class:`secagg.KeyHolderParty`; the aggregator cannot make it decrypt a
single client's blob (the recombination check) nor a second time (the on-chain
reservation), nor release a dp=client sum without its noise. Between messages its secrets
stay on its own node (:meth:`export_state` into ``Context.state``, docs/architecture.md
"Deployment on Flower"); they are never sent.
"""

from __future__ import annotations

import json
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
from deploy._sites import SiteAccounts, SitePolicy, SitePolicyError, SiteView, compose_run_config
from deploy._wire import JOIN, RELEASE, Scalar, WireMessage
from dp import ClientLevelAccountant, DPError, noise_std, to_dp_setup
from secagg import (
    CommitmentMismatchError,
    KeyHolderParty,
    LocalDirectoryStore,
    PrivacyPolicy,
    RoundManifest,
    build_scheme,
)
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
        self._cfg: Any = None  # the run's config, composed from ``_overrides``

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
        self._ledger = self.policy.ledger_of(self._ledger, message, pinned=self._pinned)
        self._pinned = self._ledger.address
        manifest_bytes = message.blob("manifest")
        manifest = RoundManifest.from_bytes(manifest_bytes)
        # dp=client: the noise this release needs, checked before anything is stored
        accountant, noise = self._client_level_release(round_id, manifest)
        self.store.put(manifest_bytes)
        self.store.put(bytes(self.scheme.public_context))
        count = message.integer("blobs")
        for index in range(count):
            self.store.put(message.blob(f"blob.{index}"))
        if LEAF_SET in message.fields:  # merkle: checked against the root when read
            self.store.put(message.blob(LEAF_SET))
        if accountant is not None:
            self._check_federation_events(round_id, manifest, accountant, message)
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
            noise_std=noise,  # dp=client (central): added inside the release
        )
        return WireMessage(RELEASE, arrays={"total": np.asarray(total, dtype=np.float64)})

    # ------------------------------------------------------------------ dp=client
    def _run_config(self) -> Any:
        if self._cfg is None:
            if self._overrides is None:
                raise DeploymentError("this key holder has not joined the run yet")
            self._cfg, _ = compose_run_config(_lines(self._overrides))
        return self._cfg

    def _client_level_release(
        self, round_id: int, manifest: RoundManifest
    ) -> tuple[ClientLevelAccountant | None, float | None]:
        """``(the federation's accountant, the release noise std)``: both None unless
        ``dp=client`` with central noise. The noise is ``sigma * C / n`` on the sum of the
        ``n`` selected hospitals' clipped updates, each weighted ``1/n`` (as the runner's
        :meth:`ClientLevelPrivacy.release_noise_std`), with sigma and C from the committed
        federation policy, which must be the one this key holder's own config gives."""
        cfg = self._run_config()
        mode = cfg.dp.name
        if manifest.dp_mode != mode:
            raise SitePolicyError(
                f"round {round_id}: the manifest is dp={manifest.dp_mode}, this run dp={mode}: "
                "this key holder does not release a sum without the run's noise"
            )
        if mode != "client":
            return None, None
        try:
            setup = to_dp_setup(cfg.dp)
        except DPError as error:
            raise DeploymentError(f"dp=client: {error}") from error
        if setup.distributed:  # each hospital added its share before protecting
            return None, None
        policy = manifest.federation_policy
        if policy is None or not manifest.clients:
            raise CommitmentMismatchError(f"round {round_id}: no federation privacy policy")
        accountant, expected = _federation_accountant(cfg, setup, manifest, policy)
        if policy != expected:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest does not commit this run's federation privacy "
                f"policy (sigma {policy.noise_multiplier!r}, C {policy.max_grad_norm!r}; this "
                f"run: sigma {expected.noise_multiplier!r}, C {expected.max_grad_norm!r})"
            )
        std = noise_std(noise_multiplier=policy.noise_multiplier, clip_norm=policy.max_grad_norm)
        return accountant, std / len(manifest.clients)

    def _check_federation_events(
        self,
        round_id: int,
        manifest: RoundManifest,
        accountant: ClientLevelAccountant,
        message: WireMessage,
    ) -> None:
        """Re-account the federation's event chain before releasing: it links, its epsilon
        is what its events give, its head is the manifest's ``federation_event``, it
        accounts exactly the rounds this key holder released before (attested on the
        ledger), and one more release keeps it within the budget."""
        state = accountant.state_dict()
        try:
            state["events"] = json.loads(message.text("federation_events") or "[]")
            accountant.load_state_dict(state)
        except (DPError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise CommitmentMismatchError(
                f"round {round_id}: the federation's privacy events: {error}"
            ) from error
        events = accountant.events
        # central noise: every release was accounted at the planned sigma, rate and C
        planned = (
            "dp-fedavg-client",
            accountant.client_sample_rate,
            accountant.noise_multiplier,
            accountant.clip_norm,
            accountant.poisson_sampling,
            1,
        )
        for event in events:
            claimed = (
                event.mechanism,
                event.sample_rate,
                event.noise_multiplier,
                event.max_grad_norm,
                event.poisson_sampling,
                event.steps,
            )
            if claimed != planned:
                raise CommitmentMismatchError(
                    f"round {round_id}: the federation's event of round {event.round_id} is "
                    "not accounted with the run's policy"
                )
        head = events[-1].digest().hex() if events else None
        if head != manifest.federation_event:
            raise CommitmentMismatchError(
                f"round {round_id}: the federation's privacy events end at {head}, the "
                f"manifest commits {manifest.federation_event}"
            )
        released = self._released_rounds(round_id)
        accounted = [e.round_id for e in events]
        if accounted != released:
            raise CommitmentMismatchError(
                f"round {round_id}: the federation's events account rounds {accounted}; this "
                f"key holder released rounds {released}"
            )
        accountant.check_budget(1)  # PrivacyBudgetExceededError: nothing is released

    def _released_rounds(self, round_id: int) -> list[int]:
        """The earlier rounds whose release this key holder attested on the ledger."""
        from chain import ChainError

        if self._ledger is None:
            raise DeploymentError("no ledger")
        released = []
        for earlier in range(1, round_id):
            try:
                info = self._ledger.round_info(earlier)
            except ChainError:  # never opened (a round the budget refused)
                continue
            if info.reveal_digest is not None:
                released.append(earlier)
        return released


def _federation_accountant(
    cfg: Any, setup: Any, manifest: RoundManifest, policy: PrivacyPolicy
) -> tuple[ClientLevelAccountant, PrivacyPolicy]:
    """The federation's accountant and policy as the runner builds them from the run's
    config (target mode: sigma calibrated over ``federation.rounds``). The population is
    not known here: the client sampling rate is 1 when every hospital is asked every round
    (``federation.client_fraction >= 1``), else the committed one (unchecked)."""
    from experiments._privacy import FEDERATION_ACCOUNT, federation_policy_of

    config = setup.config
    rounds = int(cfg.federation.rounds)
    rate = 1.0 if float(cfg.federation.client_fraction) >= 1.0 else policy.sample_rate
    try:
        accountant = ClientLevelAccountant.from_config(
            config,
            n_clients=len(manifest.clients),
            client_sample_rate=rate,
            planned_rounds=rounds,
            federation_id=FEDERATION_ACCOUNT,
        )
    except DPError as error:
        raise CommitmentMismatchError(f"dp=client: {error}") from error
    return accountant, federation_policy_of(accountant, config, planned_rounds=rounds)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


__all__ = ["ROLE_KEY_HOLDER", "KeyHolderSite"]
