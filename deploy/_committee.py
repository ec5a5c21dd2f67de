"""A CKKS decryption committee member's site: its own key share, its own ledger account.

With ``secagg.committee_size`` K > 1 there is no key holder: K committee nodes (node
config ``role=committee``, ``member=1..K``) each run a :class:`CommitteeSite`, and any T
of them (``secagg.committee_threshold``) release a round's sum. Key generation is the
in-process committee's (:mod:`secagg._committee_round`, :mod:`secagg.ckks._committee`),
dealer-free: every member draws its own secret on its own node.

* ``secagg.v1.join``: the member answers with its index, its ledger address and a fresh
  X25519 *box key*, signed with its ledger account (so the others can check, against the
  committee on chain, that the box key is that member's and not the driver's);
* ``secagg.v1.committee.keygen`` (after the committee is set up on chain, which fixes the
  seed of the common random polynomial): the member draws its secret, commits its public
  key share's digest on chain **with its own account** and, for T < K, deals the Shamir
  shares of its secret to the other members, each sealed for its recipient (AES-GCM under
  a key derived from the static X25519 agreement of the two members' signed box keys: the
  driver, which relays them, can neither read nor forge one);
* ``secagg.v1.committee.setup``: the member opens the shares dealt to it, takes every
  member's public key share (each checked against its digest on chain) and builds the
  collective public context, which the clients encrypt under;
* ``secagg.v1.committee.release``: as the key holder, the member checks the round itself
  (the round is published on chain under this manifest, the aggregate's digest is the
  published one, the participants' committed blobs recombine to it byte for byte), the
  first member reserves the round's one release on chain, and the member attests its
  partial decryption's digest and returns the partial. A member decrypts a round once: it
  refuses a round it already decrypted (its own record and the ledger's), a round whose
  release is not open (finalized, refused, revealed) and an aggregate that is not the
  published one (attesting that refusal, as in-process);
* ``secagg.v1.committee.combine``: one member (the lowest that answered) combines the
  attested partials (:func:`secagg._committee_round.combine_attested`, no secret needed),
  attests the released sum's digest, or, with fewer than T usable partials, attests the
  refusal (codes 4 and 5 of :mod:`secagg._committee_round`). The driver does not take the
  combiner's word: it combines the attested partials itself (public data only) and
  leaves the round out, naming the combiner, when the released sum is not theirs, before
  the sum reaches the model (the auditor names that round afterwards as well).

Who sees what: the member's secret, its Shamir shares and its key share never leave its
node (:meth:`CommitteeSite.export_state` into the SuperNode's ``Context.state``, read
only by :meth:`CommitteeSite.restore_state`); the driver sees the public key shares, the
sealed shares (ciphertexts), the partial decryptions (public: stored for the auditor) and
the released sum. What the partials reveal, and the smudging margin, is stated in
:mod:`secagg.ckks._committee`; T colluding members can decrypt any ciphertext under the
collective key. There is no verifiable secret sharing (a member dealing inconsistent
shares is not detected at key generation).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from chain import ChainError, CommitteeInfo, Ledger, RoundStatus
from deploy._errors import DeploymentError, WireFormatError
from deploy._sites import SiteAccounts, SitePolicy, SiteView, compose_run_config
from deploy._wire import (
    COMMITTEE_COMBINE,
    COMMITTEE_KEYGEN,
    COMMITTEE_RELEASE,
    COMMITTEE_SETUP,
    JOIN,
    Scalar,
    WireMessage,
)
from secagg import LocalDirectoryStore, RoundManifest, SecAggError
from secagg._committee_round import (
    COMMITTEE_REFUSAL_REASONS,
    REFUSAL_BAD_PARTIALS,
    REFUSAL_TOO_FEW_PARTIALS,
    CommitteeMemberParty,
    attested_partials,
    combine_attested,
)
from secagg._digest import Digest, keccak256
from secagg._roles import (
    refusal_code,
)
from secagg.ckks import (
    CommitteeMember,
    CommitteeParams,
    InsufficientPartialsError,
    PartialMismatchError,
    RevealPolicy,
)
from secagg.ckks._config import build_ckks_scheme

ROLE_COMMITTEE = "committee"
#: What a member signs with its ledger account to vouch for its box key.
BOX_KEY_DOMAIN = b"secagg.v1.committee.box-key"
_SHARE_AAD = b"secagg.v1.committee.share"
_NONCE_BYTES = 12


class CommitteeSiteError(DeploymentError):
    """A committee member refuses a request (wrong member, a round it must not decrypt,
    a share or key it cannot verify)."""


def box_key_statement(*, member: int, address: str, box_key: bytes) -> bytes:
    """The bytes a member signs (EIP-191) to bind its box key to its index and account."""
    return BOX_KEY_DOMAIN + struct.pack(">H", member) + bytes.fromhex(address[2:]) + box_key


def _share_key(secret: bytes, peer: bytes, *, seed: bytes, sender: int, recipient: int) -> bytes:
    """AES-256 key of the share ``sender`` deals to ``recipient`` (static X25519 + HKDF)."""
    shared = X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(peer)
    )
    info = _SHARE_AAD + seed + struct.pack(">HH", sender, recipient)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _cfg_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


class CommitteeSite:
    """Committee member ``member`` (1..K) of a CKKS run (see the module docstring)."""

    def __init__(
        self,
        *,
        member: int,
        account: LocalAccount | None = None,
        store_dir: Path | None = None,
        policy: SitePolicy | None = None,
    ) -> None:
        if isinstance(member, bool) or not isinstance(member, int) or member < 1:
            raise CommitteeSiteError(f"a committee member's index is 1..K, got {member!r}")
        self.index = member
        self.account: LocalAccount = account or Account.create()
        self.policy = policy or SitePolicy()
        if store_dir is None:
            store_dir = Path(tempfile.mkdtemp(prefix="secagg-committee-"))
            weakref.finalize(self, shutil.rmtree, store_dir, ignore_errors=True)
        self.store = LocalDirectoryStore(store_dir)
        self.member: CommitteeMember | None = None
        self._box_secret = X25519PrivateKey.generate().private_bytes_raw()
        self._peers: dict[int, bytes] = {}  # member -> box key, verified against the chain
        self._decrypted: set[int] = set()  # rounds this member published a partial of
        self._ledger: Ledger | None = None
        self._pinned: str | None = None
        self._overrides: str | None = None

    def __repr__(self) -> str:
        return f"CommitteeSite(member={self.index}, address={self.account.address})"

    @property
    def box_key(self) -> bytes:
        return X25519PrivateKey.from_private_bytes(self._box_secret).public_key().public_bytes_raw()

    def handle(self, message: WireMessage) -> WireMessage:
        handlers = {
            JOIN: self.join,
            COMMITTEE_KEYGEN: self.keygen,
            COMMITTEE_SETUP: self.setup,
            COMMITTEE_RELEASE: self.release,
            COMMITTEE_COMBINE: self.combine,
        }
        if message.type not in handlers:
            raise CommitteeSiteError(f"a committee member does not answer {message.type}")
        return handlers[message.type](message)

    # -------------------------------------------------------------------------- state
    def export_state(self) -> dict[str, Scalar]:
        """What survives between messages in a fresh process: the run's config, this
        member's index, its box key and key share (secret; kept by its own SuperNode in
        ``Context.state``, never sent), the contract it serves and the rounds it decrypted."""
        state: dict[str, Scalar] = {"member": self.index, "box_secret": self._box_secret}
        if self._overrides is not None:
            state["overrides"] = self._overrides
        if self._pinned is not None:
            state["ledger_address"] = self._pinned
        if self.member is not None:
            state["secret"] = self.member.export_secret()
        state["peers"] = json.dumps({str(j): key.hex() for j, key in sorted(self._peers.items())})
        state["decrypted"] = json.dumps(sorted(self._decrypted))
        return state

    def restore_state(self, state: Mapping[str, Scalar]) -> None:
        """Take up what :meth:`export_state` saved; the state of another member (or of a
        run with another config) is refused; an empty state (a new node) changes nothing."""
        if not state:
            return
        saved = WireMessage(JOIN, fields=dict(state))
        if saved.integer("member") != self.index:
            raise CommitteeSiteError(
                f"member {self.index} was handed the state of member {saved.integer('member')}"
            )
        if "overrides" in state:
            overrides = saved.text("overrides")
            if self._overrides is not None and overrides != self._overrides:
                raise CommitteeSiteError("state of another run's configuration")
            self._overrides = overrides
        if "ledger_address" in state:
            address = saved.text("ledger_address")
            if self._pinned is not None and address.lower() != self._pinned.lower():
                raise CommitteeSiteError("state of a run on another contract")
            self._pinned = address
        self._box_secret = saved.blob("box_secret")
        self._peers = {int(j): bytes.fromhex(k) for j, k in json.loads(saved.text("peers")).items()}
        self._decrypted |= {int(r) for r in json.loads(saved.text("decrypted"))}
        if "secret" in state and self.member is None and self._overrides is not None:
            params, committee, policy = self._scheme_params(self._overrides)
            self.member = CommitteeMember.restore(
                saved.blob("secret"), params=params, committee=committee, policy=policy
            )
            if self.member.member != self.index:
                raise CommitteeSiteError("the saved key share is another member's")

    # --------------------------------------------------------------------------- join
    def _scheme_params(self, overrides: str) -> tuple[Any, CommitteeParams, Any]:
        cfg, _ = compose_run_config(_cfg_lines(overrides))
        if cfg.secagg.name != "ckks":
            raise CommitteeSiteError(f"secagg={cfg.secagg.name} has no decryption committee")
        scheme = build_ckks_scheme(cfg.secagg)  # no key is made with a committee
        committee = scheme.committee
        if committee.size < 2:
            raise CommitteeSiteError("the run has no decryption committee (committee_size=1)")
        if self.index not in committee.members:
            raise CommitteeSiteError(
                f"member {self.index} is not in the run's committee 1..{committee.size}"
            )
        return scheme.params, committee, scheme.policy

    def join(self, message: WireMessage) -> WireMessage:
        overrides = message.text("overrides")
        self._scheme_params(overrides)  # refuses a run this member cannot serve
        if self._overrides is not None and overrides != self._overrides:
            raise CommitteeSiteError("this member already serves a run of another config")
        self._overrides = overrides
        statement = box_key_statement(
            member=self.index, address=self.account.address, box_key=self.box_key
        )
        signature = self.account.sign_message(encode_defunct(primitive=statement)).signature
        return WireMessage(
            JOIN,
            fields={
                "role": ROLE_COMMITTEE,
                "member": self.index,
                "address": str(self.account.address),
                "box_key": self.box_key,
                "box_signature": bytes(signature),
            },
        )

    def _attach(self, message: WireMessage) -> Ledger:
        self._ledger = self.policy.ledger_of(self._ledger, message, pinned=self._pinned)
        self._pinned = self._ledger.address
        return self._ledger

    def _committee_on_chain(self, ledger: Ledger, committee: CommitteeParams) -> CommitteeInfo:
        info = ledger.committee()
        if info is None:
            raise CommitteeSiteError("no decryption committee is set up on the ledger")
        if (info.size, info.threshold) != (committee.size, committee.threshold):
            raise CommitteeSiteError(
                f"the committee on chain ({info.threshold} of {info.size}) is not the run's "
                f"({committee.threshold} of {committee.size})"
            )
        if info.members[self.index - 1].lower() != self.account.address.lower():
            raise CommitteeSiteError(
                f"member {self.index} on chain is {info.members[self.index - 1]}, "
                f"not this node's {self.account.address}"
            )
        return info

    # ----------------------------------------------------------------------- key setup
    def keygen(self, message: WireMessage) -> WireMessage:
        if self._overrides is None:
            raise CommitteeSiteError("keygen before join")
        if self.member is not None:
            raise CommitteeSiteError(f"member {self.index} already generated its key share")
        params, committee, policy = self._scheme_params(self._overrides)
        ledger = self._attach(message)
        info = self._committee_on_chain(ledger, committee)
        peers: dict[int, bytes] = {}
        for j in committee.members:
            key = message.blob(f"box_key.{j}")
            statement = box_key_statement(member=j, address=info.members[j - 1], box_key=key)
            signer = Account.recover_message(
                encode_defunct(primitive=statement), signature=message.blob(f"box_signature.{j}")
            )
            if signer.lower() != info.members[j - 1].lower():
                raise CommitteeSiteError(f"member {j}'s box key is not signed by its account")
            peers[j] = key
        if peers[self.index] != self.box_key:
            raise CommitteeSiteError(f"member {self.index}'s own box key was replaced")
        member = CommitteeMember(
            member=self.index,
            params=params,
            committee=committee,
            policy=policy,
            crp_seed=bytes(info.seed),
        )
        digest = self.store.put(member.public_key_share)
        ledger.commit_key_share(digest, sender=self.account)
        fields: dict[str, Any] = {"key_share": member.public_key_share}
        for recipient, share in member.deal_secret_shares().items():
            key = _share_key(
                self._box_secret,
                peers[recipient],
                seed=bytes(info.seed),
                sender=self.index,
                recipient=recipient,
            )
            nonce = os.urandom(_NONCE_BYTES)
            fields[f"sealed.{recipient}"] = nonce + AESGCM(key).encrypt(nonce, share, _SHARE_AAD)
        self.member, self._peers = member, peers
        return WireMessage(COMMITTEE_KEYGEN, fields=fields)

    def setup(self, message: WireMessage) -> WireMessage:
        member = self.member
        if member is None or self._overrides is None:
            raise CommitteeSiteError("setup before keygen")
        if member.context is not None:
            raise CommitteeSiteError(f"member {self.index} already joined the committee")
        ledger = self._attach(message)
        info = self._committee_on_chain(ledger, member.committee)
        if not member.committee.is_additive:
            for sender in member.committee.members:
                if sender == self.index:
                    continue
                sealed = message.blob(f"sealed.{sender}")
                key = _share_key(
                    self._box_secret,
                    self._peers[sender],
                    seed=member.crp_seed,
                    sender=sender,
                    recipient=self.index,
                )
                try:
                    share = AESGCM(key).decrypt(
                        sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _SHARE_AAD
                    )
                except InvalidTag as error:
                    raise CommitteeSiteError(
                        f"the share from member {sender} does not open: not sealed by it for "
                        f"member {self.index}"
                    ) from error
                member.receive_secret_share(sender=sender, message=share)
        digests = [info.share_digests.get(j) for j in member.committee.members]
        if any(d is None for d in digests):
            raise CommitteeSiteError("not every member committed its key share on chain")
        shares = [message.blob(f"key_share.{j}") for j in member.committee.members]
        context = member.join(shares, share_digests=[Digest(bytes(d)) for d in digests if d])
        return WireMessage(COMMITTEE_SETUP, fields={"public_context": context.to_bytes()})

    # ------------------------------------------------------------------------ release
    def _joined(self) -> CommitteeMember:
        if self.member is None or self.member.context is None:
            raise CommitteeSiteError(f"member {self.index} holds no key share for the run")
        return self.member

    def release(self, message: WireMessage) -> WireMessage:
        member = self._joined()
        round_id = message.integer("round")
        ledger = self._attach(message)
        if round_id in self._decrypted or self.index in ledger.partial_attestations(round_id):
            raise CommitteeSiteError(
                f"round {round_id}: member {self.index} already decrypted it once"
            )
        status = ledger.round_info(round_id).status
        if status not in (RoundStatus.AGGREGATED, RoundStatus.RELEASING):
            raise CommitteeSiteError(
                f"round {round_id}: its release is not open ({status.name}): nothing to decrypt"
            )
        manifest_bytes = message.blob("manifest")
        self.store.put(manifest_bytes)
        for index in range(message.integer("blobs")):
            self.store.put(message.blob(f"blob.{index}"))
        manifest = RoundManifest.from_bytes(manifest_bytes)
        view = SiteView.for_manifest(ledger, self.store, manifest, parties=SiteAccounts())
        party = CommitteeMemberParty(
            consortium=view.as_consortium(), account=self.account, member=member
        )
        aggregate = message.blob("aggregate")
        start = time.perf_counter()
        try:
            fetched = party.check(round_id, manifest, aggregate)
        except (SecAggError, ChainError) as error:
            code = refusal_code(error)
            party.refuse(round_id, code)
            raise CommitteeSiteError(
                f"round {round_id}: member {self.index} refuses to decrypt: {error}"
            ) from error
        seconds = time.perf_counter() - start
        try:
            party.reserve(round_id)
        except ChainError:  # another member reserved it first (concurrent stage)
            if ledger.round_info(round_id).status is not RoundStatus.RELEASING:
                raise
        partial = party.partial(round_id, aggregate)
        self._decrypted.add(round_id)
        return WireMessage(
            COMMITTEE_RELEASE,
            fields={
                "partial": partial,
                "seconds": seconds + party.partial_seconds,
                "bytes_down": fetched + len(aggregate),
            },
        )

    def combine(self, message: WireMessage) -> WireMessage:
        member = self._joined()
        round_id = message.integer("round")
        ledger = self._attach(message)
        info = ledger.round_info(round_id)
        if info.status is not RoundStatus.RELEASING:
            raise CommitteeSiteError(
                f"round {round_id}: no reserved release to combine ({info.status.name})"
            )
        aggregate = message.blob("aggregate")
        if info.aggregate_digest is None or bytes(keccak256(aggregate)) != bytes(
            info.aggregate_digest
        ):
            raise CommitteeSiteError(f"round {round_id}: the aggregate is not the published one")
        for index in range(message.integer("partials")):
            self.store.put(message.blob(f"partial.{index}"))
        partials = attested_partials(ledger, self.store, round_id)  # only attested bytes
        context = member.context
        assert context is not None  # _joined
        start = time.perf_counter()
        try:
            total, members, named = combine_attested(
                aggregate,
                partials,
                public_context=context.to_bytes(),
                committee=member.committee,
                policy=member.policy,
            )
        except (InsufficientPartialsError, PartialMismatchError) as error:
            code = (
                REFUSAL_TOO_FEW_PARTIALS
                if isinstance(error, InsufficientPartialsError)
                else REFUSAL_BAD_PARTIALS
            )
            ledger.attest_refusal(round_id, reason_code=code, sender=self.account)
            return WireMessage(
                COMMITTEE_COMBINE,
                fields={"refused": code, "reason": f"{COMMITTEE_REFUSAL_REASONS[code]}: {error}"},
            )
        seconds = time.perf_counter() - start
        released = np.asarray(total, dtype="<f8")
        digest = self.store.put(released.tobytes())
        ledger.attest_reveal(round_id, reveal_digest=digest, sender=self.account)
        return WireMessage(
            COMMITTEE_COMBINE,
            fields={
                "members": json.dumps(list(members)),
                "named": json.dumps({str(j): why for j, why in named.items()}),
                "seconds": seconds,
            },
            arrays={"total": released.astype(np.float64)},
        )


def parse_members(text: str, *, size: int) -> tuple[int, ...]:
    """Member indices from a reply's JSON list, each in 1..size (:class:`WireFormatError`)."""
    try:
        members = tuple(int(j) for j in json.loads(text))
    except (ValueError, TypeError) as error:
        raise WireFormatError(f"not a list of member indices: {error}") from error
    if any(not 1 <= j <= size for j in members):
        raise WireFormatError(f"member indices outside 1..{size}: {members}")
    return members


# ------------------------------------------------------------------ the driver's side
class CommitteeReleaseError(DeploymentError):
    """The committee did not release a round (fewer than T partials, a refusal, no
    member answering): the round's clients are left out, the run goes on."""


class CommitteeNodes:
    """The driver's view of the K committee nodes: who joined as which member, and the
    stages it runs with them (key setup, each round's release)."""

    def __init__(self, committee: CommitteeParams, policy: RevealPolicy) -> None:
        self.committee = committee
        self.policy = policy  # the release policy the combined sum is checked under
        self.nodes: dict[int, int] = {}  # member -> node id
        self.addresses: dict[int, str] = {}
        self._box: dict[int, tuple[bytes, bytes]] = {}  # member -> (box key, signature)
        self.public_context: bytes | None = None

    def add(self, node_id: int, reply: WireMessage) -> None:
        """A ``join`` reply of role ``committee``; two nodes claiming one member index, or
        an index outside 1..K, is a :class:`DeploymentError`."""
        member = reply.integer("member")
        if member not in self.committee.members:
            raise DeploymentError(
                f"node {node_id} claims committee member {member}, outside 1..{self.committee.size}"
            )
        if member in self.nodes:
            raise DeploymentError(f"two nodes claim committee member {member}")
        self.nodes[member] = node_id
        self.addresses[member] = reply.text("address")
        self._box[member] = (reply.blob("box_key"), reply.blob("box_signature"))

    def check_complete(self, *, others: Sequence[str] = ()) -> None:
        """Every member 1..K joined (the collective key needs all K), each with its own
        ledger address, none of them one of ``others`` (the hospitals')."""
        missing = [j for j in self.committee.members if j not in self.nodes]
        if missing:
            raise DeploymentError(
                f"committee member(s) {missing} did not join: the collective key needs all "
                f"{self.committee.size} members (secagg.committee_size)"
            )
        if len(set(a.lower() for a in self.addresses.values())) != len(self.addresses):
            raise DeploymentError("two committee members claim the same ledger address")
        taken = {a.lower() for a in others}
        for j, address in sorted(self.addresses.items()):
            if address.lower() in taken:
                raise DeploymentError(
                    f"committee member {j} claims the ledger address {address} of a hospital"
                )

    def member_addresses(self) -> list[str]:
        return [self.addresses[j] for j in self.committee.members]

    def form(
        self,
        transport: Any,
        *,
        ledger: Ledger,
        store: Any,
        ledger_fields: Mapping[str, Any],
        params: Any,
        timeout: float,
    ) -> bytes:
        """Key generation with the members (committee set up on chain before): returns the
        collective public context, which the driver also derives itself from the committed
        key shares (:func:`~secagg.ckks._committee_keys.collective_public_context`)."""
        from secagg.ckks._committee_keys import collective_public_context

        info = ledger.committee()
        if info is None:
            raise DeploymentError("no decryption committee is set up on the ledger")
        for j in self.committee.members:
            if info.members[j - 1].lower() != self.addresses[j].lower():
                raise DeploymentError(
                    f"committee member {j} on chain is {info.members[j - 1]}, "
                    f"not the joined node's {self.addresses[j]}"
                )
        boxes: dict[str, Any] = dict(ledger_fields)
        for j, (key, signature) in self._box.items():
            boxes[f"box_key.{j}"], boxes[f"box_signature.{j}"] = key, signature
        keygen = self._all(
            transport,
            COMMITTEE_KEYGEN,
            dict.fromkeys(self.committee.members, boxes),
            timeout,
            "key generation",
        )
        shares = {j: keygen[j].blob("key_share") for j in self.committee.members}
        for share in shares.values():
            store.put(share)  # the auditor recombines the collective key from them
        info = ledger.committee()
        assert info is not None
        digests = [info.share_digests.get(j) for j in self.committee.members]
        if any(d is None for d in digests):
            raise DeploymentError("a committee member did not commit its key share on chain")
        context = collective_public_context(
            params,
            committee=self.committee,
            crp_seed=bytes(info.seed),
            shares=[shares[j] for j in self.committee.members],
            share_digests=[Digest(bytes(d)) for d in digests if d is not None],
        ).to_bytes()
        requests = {}
        for j in self.committee.members:
            fields: dict[str, Any] = dict(ledger_fields)
            for i in self.committee.members:
                fields[f"key_share.{i}"] = shares[i]
                if i != j and not self.committee.is_additive:
                    fields[f"sealed.{i}"] = keygen[i].blob(f"sealed.{j}")
            requests[j] = fields
        setup = self._all(transport, COMMITTEE_SETUP, requests, timeout, "joining the key")
        for j, reply in setup.items():
            if reply.blob("public_context") != context:
                raise DeploymentError(
                    f"committee member {j} derived another collective key than the committed shares"
                )
        self.public_context = context
        return context

    def _all(
        self,
        transport: Any,
        message_type: str,
        fields: Mapping[int, Mapping[str, Any]],
        timeout: float,
        what: str,
    ) -> dict[int, WireMessage]:
        """One setup stage with every member (``fields``: member -> its request's fields)."""
        requests = {
            self.nodes[j]: WireMessage(message_type, fields=dict(fields[j]))
            for j in self.committee.members
        }
        exchange = transport.exchange(requests, timeout=timeout)
        if exchange.failures:
            member_of = {n: j for j, n in self.nodes.items()}
            failed = {member_of[n]: why for n, why in exchange.failures.items()}
            raise DeploymentError(f"committee {what} failed at members {failed}")
        return {j: exchange.replies[self.nodes[j]] for j in self.committee.members}

    def release(
        self,
        transport: Any,
        *,
        round_id: int,
        fields: Mapping[str, Any],
        ledger: Ledger,
        store: Any,
        timeout: float,
    ) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
        """A round's release: every member is asked (one that does not answer within
        ``timeout`` is a dropout), then, while the release is reserved on ``ledger``, the
        lowest member that answered combines. Returns
        the released sum and each member's ``{"seconds", "bytes_up", "bytes_down"}``;
        :class:`CommitteeReleaseError` when nothing is released."""
        member_of = {n: j for j, n in self.nodes.items()}
        request = WireMessage(COMMITTEE_RELEASE, fields=dict(fields))
        exchange = transport.exchange(dict.fromkeys(member_of, request), timeout=timeout)
        partials: dict[int, bytes] = {}
        stats: dict[int, dict[str, float]] = {}
        for node_id, reply in exchange.replies.items():
            j = member_of[node_id]
            partials[j] = reply.blob("partial")
            store.put(partials[j])  # public: the auditor combines the attested partials
            stats[j] = {
                "seconds": reply.number("seconds"),
                "bytes_up": float(len(partials[j])),
                "bytes_down": float(reply.integer("bytes_down")),
            }
        absent = {member_of[n]: why for n, why in exchange.failures.items()}
        if not partials:
            raise CommitteeReleaseError(
                f"round {round_id}: no committee member released (absent: {absent})"
            )
        combine_fields: dict[str, Any] = {
            key: fields[key]
            for key in ("round", "aggregate", "ledger_url", "ledger_address", "start_block")
        }
        for index, (_, partial) in enumerate(sorted(partials.items())):
            combine_fields[f"partial.{index}"] = partial
        combine_fields["partials"] = len(partials)
        combine = WireMessage(COMMITTEE_COMBINE, fields=combine_fields)
        # the lowest member that answered; the next if it fails, then those absent before
        # (any member may attest: a reserved round must end revealed or refused)
        order = [*sorted(partials), *(j for j in self.committee.members if j not in partials)]
        for j in order:
            info = ledger.round_info(round_id)
            if info.status is not RoundStatus.RELEASING:  # a member refused: nothing to combine
                raise CommitteeReleaseError(
                    f"round {round_id}: not released ({info.status.name}, refusal code "
                    f"{info.refusal_code}; absent: {absent})"
                )
            reply = transport.exchange({self.nodes[j]: combine}, timeout=timeout).replies.get(
                self.nodes[j]
            )
            if reply is None:
                continue
            if "refused" in reply.fields:
                raise CommitteeReleaseError(
                    f"round {round_id}: committee release refused (code "
                    f"{reply.integer('refused')}: {reply.text('reason')}; absent: {absent})"
                )
            parse_members(reply.text("members"), size=self.committee.size)
            if j in stats:
                stats[j]["seconds"] += reply.number("seconds")
            total = reply.array("total").astype(np.float64)
            self._check_combined(
                round_id, j, total, aggregate=fields["aggregate"], ledger=ledger, store=store
            )
            return total, stats
        raise CommitteeReleaseError(
            f"round {round_id}: no committee member combined the partials (the round stays "
            "reserved on chain, unfinalized)"
        )

    def _check_combined(
        self,
        round_id: int,
        combiner: int,
        total: np.ndarray,
        *,
        aggregate: bytes,
        ledger: Ledger,
        store: Any,
    ) -> None:
        """The combiner's sum must be what the attested partials release (the combination
        is deterministic and public: :func:`combine_attested`, as the auditor runs it);
        :class:`CommitteeReleaseError` otherwise, so the round's clients are left out."""
        if self.public_context is None:
            raise DeploymentError("the committee's collective key was never formed")
        try:
            expected, _, _ = combine_attested(
                aggregate,
                attested_partials(ledger, store, round_id),
                public_context=self.public_context,
                committee=self.committee,
                policy=self.policy,
            )
        except (InsufficientPartialsError, PartialMismatchError) as error:
            raise CommitteeReleaseError(
                f"round {round_id}: committee member {combiner} released a sum, but the "
                f"attested partials release nothing: {error}"
            ) from error
        # both kept: whichever the chain names, the auditor can check it
        combined = np.asarray(expected, dtype="<f8").tobytes()
        store.put(combined)
        released = np.asarray(total, dtype="<f8").tobytes()
        digest = store.put(released)
        who = f"committee member {combiner} ({self.addresses.get(combiner)})"
        if combined != released:
            raise CommitteeReleaseError(
                f"round {round_id}: {who} released a sum that is not what the attested "
                "partials release; the round is left out"
            )
        attested = ledger.round_info(round_id).reveal_digest
        if attested is None or bytes(attested) != bytes(digest):
            raise CommitteeReleaseError(
                f"round {round_id}: {who} attested another sum than the one it returned; "
                "the round is left out"
            )


__all__ = [
    "BOX_KEY_DOMAIN",
    "ROLE_COMMITTEE",
    "CommitteeNodes",
    "CommitteeReleaseError",
    "CommitteeSite",
    "CommitteeSiteError",
    "box_key_statement",
    "parse_members",
]
