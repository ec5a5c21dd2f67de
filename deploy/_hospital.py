"""A hospital's site: its own data partition, model, trainer and ledger account.

It answers four messages (docs/formats.md, "Deployment messages"):

* ``secagg.v1.join``: composes the run's config, loads its own partition, and replies with
  its ledger address, its number of training samples (the FedAvg weight) and the initial
  model (every hospital builds it from the run's seed; the driver checks they agree); with
  ``dp=sample`` also its privacy policy and DP-SGD steps per round, which the manifests
  commit;
* ``secagg.v1.train``: checks the manifest against the digest on chain (and, with
  ``dp=sample``, that it commits this hospital's own policy), trains the global model on its
  own data (``dp=sample``: Opacus DP-SGD under its own accountant, refused once its budget
  would be passed), protects ``weight * update`` (CKKS: under the key holder's public
  context), commits the digests and its cumulative epsilon **with its own account**, keeps
  the blob and hands over its chain of privacy events (public: the ledger commits to them);
* ``secagg.v1.reveal``: once the ledger says the commit phase is closed, puts the blob in
  its own store, records the reveal on chain and hands the blob (and its privacy event)
  to the aggregator;
* ``chain.commit_mode=batched|merkle`` (:mod:`deploy._commit_modes`): ``train`` signs the
  commitment with its own account instead (merkle: its leaf, for the manifest received,
  one per round) and returns the signature; before ``reveal`` it checks its row on chain
  (batched) or its leaf proof against the root on chain (merkle; a leaf left out: it proves
  the omission on chain itself and keeps the blob);
* with ``dp=client``, ``train`` checks that the manifest commits the federation policy its
  own config gives and the uniform weight ``1/n``, then clips its update to C here, on its
  node (and, with ``dp.distributed=true``, adds its noise share) before protecting it;
* ``secagg.v1.evaluate``: the global model's metrics on its own test set;
* ``secagg=masking``: ``secagg.v1.mask.advertise`` (the checks of ``train``, then its own
  masking client's signed keys), ``mask.share|rebut|consistency|unmask`` (that client's
  stages, :class:`deploy._masking.MaskingStages`), and ``train`` masks the update with the
  shares delivered in it; the client's private state never leaves the node.

Threat model: as :class:`secagg.ClientParty` (the hospital's update leaves the site only as
a protected blob, after the commit phase closed); the aggregator learns the hospital's
sample count and test metrics, which FedAvg and the evaluation need. With ``dp=sample`` the
accountant (its chain of privacy events and sigma) lives on the hospital's node only, in
its exported state; the aggregator gets each event, never the accountant, the data or the
noise.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from chain import Ledger, commit_mode_of
from deploy._commit_modes import (
    AlreadySignedError,
    LeafOmittedError,
    check_batched_row,
    check_leaf,
    has_signed_commit,
    signed_commit_fields,
    signed_commit_from,
)
from deploy._errors import DeploymentError, SettingsError
from deploy._masking import MaskedInputSession, MaskingStages, masking_plan
from deploy._sites import (
    SiteAccounts,
    SitePolicy,
    SiteView,
    Stopwatch,
    compose_run_config,
    public_session,
)
from deploy._wire import (
    EVALUATE,
    JOIN,
    MASK_ADVERTISE,
    MASK_TYPES,
    REVEAL,
    TRAIN,
    Scalar,
    WireMessage,
)
from dp import DPError, PrivacyBudgetExceededError
from secagg import (
    ClientParty,
    CommitmentMismatchError,
    Digest,
    LocalDirectoryStore,
    PrivacyPolicy,
    RoundManifest,
    Submission,
    keccak256,
)
from secagg._hydra import scheme_class

ROLE_HOSPITAL = "hospital"


@dataclass
class _Pending:
    party: ClientParty
    submission: Submission


class HospitalSite:
    """One hospital (``partition_id``: its index among the dataset's clients)."""

    def __init__(
        self,
        *,
        partition_id: int,
        data_dir: str | None = None,
        account: LocalAccount | None = None,
        store_dir: Path | None = None,
        policy: SitePolicy | None = None,
    ) -> None:
        if partition_id < 0:
            raise SettingsError(f"partition id must be >= 0, got {partition_id}")
        self.partition_id = partition_id
        self.data_dir = data_dir
        self.account: LocalAccount = account or Account.create()
        self.policy = policy or SitePolicy()  # what this hospital accepts (its node config)
        if store_dir is None:
            store_dir = Path(tempfile.mkdtemp(prefix=f"secagg-hospital-{partition_id}-"))
            weakref.finalize(self, shutil.rmtree, store_dir, ignore_errors=True)
        self.store = LocalDirectoryStore(store_dir)
        self.federation: Any = None
        self.scheme_schema: Any = None
        self._ledger: Ledger | None = None
        self._pending: dict[int, _Pending] = {}
        self._overrides: str | None = None
        self._ledger_fields: dict[str, Scalar] = {}
        self._dp_state: str | None = None  # dp=sample: the accountant, until loaded
        self.commit_mode = "direct"  # the run's chain.commit_mode (set at join)
        self._last_leaf_round = 0  # merkle: the latest round it signed a leaf for
        self.masking = MaskingStages(self.account)  # secagg=masking: its client's state

    def __repr__(self) -> str:
        return f"HospitalSite(partition={self.partition_id}, address={self.account.address})"

    def handle(self, message: WireMessage) -> WireMessage:
        if message.type == JOIN:
            return self.join(message)
        if self.federation is None and self._overrides is not None:
            self._load(self._overrides)  # a fresh process: rebuild from the saved config
        if self.federation is None:
            raise DeploymentError("this hospital has not joined the run yet")
        if message.type == TRAIN:
            return self.train(message)
        if message.type == REVEAL:
            return self.reveal(message)
        if message.type == EVALUATE:
            return self.evaluate(message)
        if message.type == MASK_ADVERTISE:
            return self.advertise(message)
        if message.type in MASK_TYPES:
            return self.masking.handle(message)
        raise DeploymentError(f"a hospital does not answer {message.type}")

    # ------------------------------------------------------------------------------ join
    def join(self, message: WireMessage) -> WireMessage:
        self._load(message.text("overrides"))
        federation = self.federation
        client = federation.data.clients[self.partition_id]
        params = parameters_to_vector(federation.model.parameters()).detach().cpu().numpy()
        fields: dict[str, Scalar] = {
            "role": ROLE_HOSPITAL,
            "partition_id": self.partition_id,
            "name": client.name,
            "address": str(self.account.address),
            "n_train": int(client.n_train),
        }
        policy = self.privacy_policy()
        if policy is not None:
            fields["policy"] = json.dumps(policy.to_dict(), sort_keys=True)
            fields["expected_steps"] = policy.steps
        return WireMessage(JOIN, fields=fields, arrays={"params": params})

    def privacy_policy(self) -> PrivacyPolicy | None:
        """This hospital's DP-SGD policy (what its events must match); None without DP."""
        policy: PrivacyPolicy | None = self.federation.privacy.policy(self.partition_id)
        return policy

    def _dp_client(self) -> Any:
        """dp=sample: this hospital's own DP client (accountant and event chain); else None."""
        privacy = self.federation.privacy if self.federation is not None else None
        if privacy is None or privacy.mode != "sample":
            return None
        return privacy.clients[self.partition_id]

    def _load(self, overrides_text: str) -> None:
        """Compose the run's config and load this hospital's partition and model."""
        from experiments._runner import build_federation

        overrides = [line for line in overrides_text.splitlines() if line]
        if self.data_dir is not None:
            overrides.append(f"dataset.data_dir={self.data_dir}")
        cfg, _ = compose_run_config(overrides)
        # before any data is loaded: the driver's config must meet this hospital's policy
        self.policy.check_scheme(cfg.secagg.name, dp_mode=cfg.dp.name)
        commit_mode = commit_mode_of(cfg.chain) if hasattr(cfg.chain, "commit_mode") else "direct"
        self.policy.check_commit_mode(commit_mode)
        federation = build_federation(cfg)
        if self.partition_id >= len(federation.data.clients):
            raise SettingsError(
                f"partition {self.partition_id}: the dataset has "
                f"{len(federation.data.clients)} clients"
            )
        if federation.privacy.mode not in ("off", "sample", "client"):
            raise SettingsError(
                f"dp={federation.privacy.mode} is not deployed on Flower (dp=off|sample|client)"
            )
        self.federation = federation
        self.scheme_schema = cfg.secagg
        self.commit_mode = commit_mode
        self._overrides = overrides_text
        if self._dp_state is not None:
            self._load_dp_state(self._dp_state)

    def _load_dp_state(self, text: str) -> None:
        dp_client = self._dp_client()
        if dp_client is None:
            raise DeploymentError("saved DP accountant state, but this run has no dp=sample")
        try:
            dp_client.load_state_dict(json.loads(text))
        except (DPError, ValueError, KeyError, TypeError) as error:
            raise DeploymentError(f"this hospital's saved accountant state: {error}") from error
        self._dp_state = None

    # ------------------------------------------------------------------------- state
    def export_state(self) -> dict[str, Scalar]:
        """What must survive until the next message when each message runs in a fresh
        process (Flower 1.42 SuperNodes): the run's config, the ledger it talks to, a
        committed submission awaiting its reveal and (masking) its masking client's round
        state, private keys included (docs/formats.md 4.2). Kept on this node only
        (``Context.state``); never sent. The ledger key is not in it (it comes from the
        node's key file)."""
        state: dict[str, Scalar] = dict(self._ledger_fields)
        if self._overrides is not None:
            state["overrides"] = self._overrides
        dp_client = self._dp_client()
        if dp_client is not None:  # the accountant: its event chain and sigma, no secret
            state["dp.state"] = json.dumps(dp_client.state_dict(), sort_keys=True)
        elif self._dp_state is not None:
            state["dp.state"] = self._dp_state
        for round_id, pending in self._pending.items():
            submission = pending.submission
            event = b""
            if bytes(submission.event_digest) != bytes(32):
                event = self.store.get(submission.event_digest)
            state |= {
                "pending.round": round_id,
                "pending.client_id": submission.client_id,
                "pending.blob": submission.blob,
                "pending.event": event,
                "pending.epsilon": float(submission.epsilon),
                "pending.manifest_digest": bytes(submission.manifest_digest),
            }
            if submission.signed is not None:  # batched, merkle: the row it signed
                state |= signed_commit_fields(submission.signed, prefix="pending.signed")
        if self._last_leaf_round:
            state["merkle.last_round"] = self._last_leaf_round
        return state | self.masking.export_state()

    def restore_state(self, state: Mapping[str, Scalar]) -> None:
        """Take up the state :meth:`export_state` saved (in a fresh process)."""
        saved = WireMessage(REVEAL, fields=dict(state))
        self.masking.restore_state(state)
        if "overrides" in state and self._overrides is None:
            self._overrides = saved.text("overrides")
        if "dp.state" in state:
            self._dp_state = saved.text("dp.state")
            if self.federation is not None:
                self._load_dp_state(self._dp_state)
        if "ledger_address" in state:
            self._ledger_fields = {
                k: state[k] for k in ("ledger_url", "ledger_address", "start_block")
            }
        if "merkle.last_round" in state:
            self._last_leaf_round = max(self._last_leaf_round, saved.integer("merkle.last_round"))
        if "pending.round" in state and not self._pending:
            round_id = saved.integer("pending.round")
            event = saved.blob("pending.event")
            blob = saved.blob("pending.blob")
            submission = Submission(
                client_id=saved.integer("pending.client_id"),
                blob_digest=keccak256(blob),
                event_digest=self.store.put(event) if event else Digest(bytes(32)),
                epsilon=saved.number("pending.epsilon"),
                manifest_digest=Digest(saved.blob("pending.manifest_digest")),
                blob=blob,
                signed=signed_commit_from(
                    saved, client=str(self.account.address), prefix="pending.signed"
                )
                if has_signed_commit(saved, prefix="pending.signed")
                else None,
            )
            ledger = self._ledger_of(WireMessage(REVEAL, fields=self._ledger_fields))
            view = SiteView(
                ledger=ledger,
                store=self.store,
                parties=SiteAccounts(clients={submission.client_id: self.account}),
            )
            party = ClientParty(client_id=submission.client_id, consortium=view.as_consortium())
            self._pending[round_id] = _Pending(party, submission)

    # ----------------------------------------------------------------------------- train
    def _set_params(self, params: np.ndarray) -> None:
        model = self.federation.model
        current = parameters_to_vector(model.parameters())
        if params.shape != tuple(current.shape):
            raise DeploymentError(f"global model has {params.size} values, ours {current.numel()}")
        with torch.no_grad():
            vector_to_parameters(
                torch.as_tensor(params, dtype=current.dtype, device=current.device),
                model.parameters(),
            )

    def _ledger_of(self, message: WireMessage) -> Ledger:
        """The ledger the request names, if this hospital serves it (its policy: its own
        endpoint, the contract of its node config or else the one it joined this run)."""
        address = message.text("ledger_address")
        joined = self._ledger_fields.get("ledger_address")
        self._ledger = self.policy.ledger_of(
            self._ledger, message, pinned=str(joined) if joined is not None else None
        )
        if joined is None:
            self._ledger_fields = {
                "ledger_url": message.text("ledger_url"),
                "ledger_address": address,
                "start_block": message.integer("start_block"),
            }
        return self._ledger

    def _manifest_on_chain(self, round_id: int, ledger: Ledger, message: WireMessage) -> Any:
        manifest_bytes = message.blob("manifest")
        if keccak256(manifest_bytes) != ledger.round_info(round_id).config_digest:
            raise CommitmentMismatchError(f"round {round_id}: not the manifest on chain")
        return RoundManifest.from_bytes(manifest_bytes)

    def _manifest_to_sign(self, round_id: int, message: WireMessage) -> Any:
        """Merkle rounds: the manifest the leaf will name (the round is not on chain yet;
        before revealing, the hospital checks the opened round names this digest)."""
        manifest = RoundManifest.from_bytes(message.blob("manifest"))
        if manifest.round_id != round_id:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest is round {manifest.round_id}'s"
            )
        return manifest

    def advertise(self, message: WireMessage) -> WireMessage:
        """secagg=masking, stage 0: after the checks ``train`` makes of the manifest (on
        chain, this site's policy, selected), a fresh masking client for the round; its
        key advertisement is signed with this hospital's ledger account."""
        from secagg.masking import ledger_registry

        round_id = message.integer("round")
        ledger = self._ledger_of(message)
        manifest = self._manifest_on_chain(round_id, ledger, message)
        self.policy.check_round(manifest)
        member = manifest.client_by_address(str(self.account.address))
        if member is None:
            raise DeploymentError(f"round {round_id}: this hospital is not selected")
        if not scheme_class(manifest.scheme).key_agreement_stages:
            raise DeploymentError(f"round {round_id}: secagg={manifest.scheme} has no masking")
        registry = ledger_registry(ledger, {c.client_id: c.address for c in manifest.clients})
        advert = self.masking.begin(
            manifest, message.blob("manifest"), client_id=member.client_id, registry=registry
        )
        return WireMessage(MASK_ADVERTISE, fields={"message": advert})

    def train(self, message: WireMessage) -> WireMessage:
        watch = Stopwatch()
        round_id = message.integer("round")
        ledger = self._ledger_of(message)
        if self.commit_mode == "merkle":  # not on chain yet: checked before the reveal
            if round_id <= self._last_leaf_round:  # before training: nothing spent
                raise AlreadySignedError(
                    f"round {round_id}: this hospital signed a leaf for round "
                    f"{self._last_leaf_round}; a second leaf would be an equivocation"
                )
            manifest = self._manifest_to_sign(round_id, message)
        else:
            manifest = self._manifest_on_chain(round_id, ledger, message)
        self.policy.check_round(manifest)  # its scheme, its size, DP: before any training
        member = manifest.client_by_address(str(self.account.address))
        if member is None:
            raise DeploymentError(f"round {round_id}: this hospital is not selected")
        declared = scheme_class(manifest.scheme)
        public_context = message.blob("public_context") if declared.has_public_material else None
        if public_context is not None and keccak256(public_context).hex() != (
            manifest.public_material or ""
        ):
            raise CommitmentMismatchError(f"round {round_id}: not the manifest's public context")
        self._check_privacy(round_id, member, manifest=manifest)
        self._set_params(message.array("params"))
        federation = self.federation
        update, _, info = federation.train_client(self.partition_id, round_id)
        update = federation.privacy.privatize_update(
            client_id=self.partition_id,
            round_id=round_id,
            update=update,
            n_admitted=len(manifest.clients),
        )
        train_seconds = watch.seconds
        events = federation.privacy.round_events(round_id)
        event = events.get(federation.data.clients[self.partition_id].name)
        session: Any
        if declared.key_agreement_stages:  # the masked input, from this round's shares
            plan = masking_plan(manifest)
            session = MaskedInputSession(self.masking, plan, message.blob("message"))
        else:
            session = public_session(
                manifest, scheme_schema=self.scheme_schema, public_context=public_context
            )
        view = SiteView.for_manifest(
            ledger,
            self.store,
            manifest,
            parties=SiteAccounts(clients={member.client_id: self.account}),
            commit_mode=self.commit_mode,
        )
        party = ClientParty(client_id=member.client_id, consortium=view.as_consortium())
        # merkle: the leaf names the manifest received (absent: the one on chain)
        signs_for = {}
        if self.commit_mode == "merkle":
            signs_for["manifest_digest"] = keccak256(message.blob("manifest"))
        submission = party.commit(round_id, session, member.weight * update, event, **signs_for)
        if self.commit_mode == "merkle":
            self._last_leaf_round = round_id
        self._pending[round_id] = _Pending(party, submission)
        signed: dict[str, Scalar] = {}
        if submission.signed is not None:  # batched, merkle: the row for the aggregator
            signed = signed_commit_fields(submission.signed)
        return WireMessage(
            TRAIN,
            fields={
                **signed,
                "committed": True,
                "blob_digest": bytes(submission.blob_digest),
                "train_seconds": train_seconds,
                "protect_seconds": session.stats.seconds.get("protect", 0.0),
                "steps": int(info.get("steps", 0)),
                # public (the ledger commits to their digests): the aggregator stores the
                # whole chain, so an event whose reply was lost arrives with the next one
                "events": self._event_chain(),
            },
        )

    def _event_chain(self) -> str:
        """dp=sample: this hospital's privacy events so far (JSON list of section 6's
        canonical texts, oldest first); empty without DP."""
        dp_client = self._dp_client()
        if dp_client is None:
            return ""
        return json.dumps([e.canonical_bytes().decode("ascii") for e in dp_client.events])

    def _check_privacy(
        self, round_id: int, member: Any, *, manifest: RoundManifest | None = None
    ) -> None:
        """dp=sample: the manifest commits this hospital's own policy and steps (else the
        auditor would hold our events against another policy), and the round fits our
        budget (refused before training: nothing spent)."""
        if self.federation.privacy.mode == "client":
            if manifest is None:
                raise DeploymentError(f"round {round_id}: dp=client checks need the manifest")
            self._check_client_level(round_id, member, manifest)
            return
        policy = self.privacy_policy()
        if policy is None:
            if member.policy is not None:
                raise CommitmentMismatchError(f"round {round_id}: a policy for a run without DP")
            return
        if member.policy != policy or member.expected_steps != policy.steps:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest does not commit this hospital's privacy policy"
            )
        refused = self.federation.privacy.admit(round_id, [self.partition_id])
        if refused:
            raise PrivacyBudgetExceededError(refused[self.partition_id])

    def _check_client_level(self, round_id: int, member: Any, manifest: RoundManifest) -> None:
        """dp=client: the manifest is a client-level round (no per-client policy), commits
        the federation policy this hospital's own config gives (sigma, clip norm C, delta,
        accountant, client sampling: a weaker one would be accounted as run), and gives it
        the uniform weight ``1/n`` (with another weight its clipped update would move the
        sum by more than C). The clipping to C is done here, on this node, in ``train``."""
        if manifest.dp_mode != "client" or member.policy is not None:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest is dp={manifest.dp_mode}, this run dp=client"
            )
        own = self.federation.privacy.federation_policy()
        if manifest.federation_policy != own:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest does not commit this run's federation "
                "privacy policy"
            )
        uniform = 1.0 / len(manifest.clients)
        if member.weight != uniform:
            raise CommitmentMismatchError(
                f"round {round_id}: weight {member.weight!r}; dp=client needs the uniform "
                f"{uniform!r} (the sum's sensitivity is C only with equal weights)"
            )

    # ---------------------------------------------------------------------------- reveal
    def reveal(self, message: WireMessage) -> WireMessage:
        round_id = message.integer("round")
        pending = self._pending.pop(round_id, None)
        if pending is None:
            raise DeploymentError(f"round {round_id}: nothing committed to reveal")
        signed = pending.submission.signed
        ledger = pending.party.consortium.ledger
        if signed is not None and ledger.round_info(round_id).merkle:
            self._check_leaf(ledger, message, signed)  # refuses or proves the omission
            self.store.put(pending.submission.blob)
        else:
            if signed is not None:  # batched: its row on chain as it signed it
                check_batched_row(ledger, round_id, signed)
            pending.party.reveal(round_id, pending.submission)  # refuses while commits are open
        event = b""
        if bytes(pending.submission.event_digest) != bytes(32):
            event = self.store.get(pending.submission.event_digest)
        return WireMessage(REVEAL, fields={"blob": pending.submission.blob, "event": event})

    def _check_leaf(self, ledger: Ledger, message: WireMessage, signed: Any) -> None:
        """Merkle rounds: the opened round names the manifest this hospital signed and the
        tree holds its leaf (the proof in ``message`` against the root on chain); when the
        tree holds something else there, prove the omission on chain with its own account
        and keep the blob (:class:`LeafOmittedError`)."""
        round_id = signed.round_id
        leaf = check_leaf(ledger, message, signed)  # or InclusionProofError: nothing to prove
        if leaf.included:
            return
        tx = ledger.challenge_omission(
            round_id, leaf=signed, at_index=leaf.at_index, proof=leaf.proof, sender=self.account
        )
        raise LeafOmittedError(
            f"round {round_id}: the root leaves out this hospital's signed leaf; omission "
            f"proven on chain (tx 0x{bytes(tx.tx_hash).hex()}), the blob stays private",
            tx=tx,
        )

    # -------------------------------------------------------------------------- evaluate
    def evaluate(self, message: WireMessage) -> WireMessage:
        from experiments._training import evaluate

        self._set_params(message.array("params"))
        federation = self.federation
        client = federation.data.clients[self.partition_id]
        result = evaluate(federation.model, client.test, device=federation.device)
        return WireMessage(
            EVALUATE,
            fields={
                "accuracy": float(result.accuracy),
                "loss": float(result.loss),
                "n_samples": int(result.n_samples),
            },
        )


__all__ = ["ROLE_HOSPITAL", "HospitalSite"]
