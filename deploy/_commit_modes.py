"""Batched and merkle commits over a deployment: the signed rows that travel on the wire,
and each side's check of them (docs/formats.md 11.1).

In ``chain.commit_mode=batched`` each hospital signs its commitment (EIP-712, section 8.1)
with its *own* ledger account on its own node and returns the signature with its ``train``
reply; the driver checks every signature before it submits one ``commitBatch``, so a bad
row leaves only its hospital out (the contract would revert the whole batch). Before it
reveals, the hospital reads the round's commitments on chain and refuses unless its own
is there exactly as it signed it.

In ``chain.commit_mode=merkle`` each hospital signs its leaf for the round id and the
digest of the manifest it received (the round is not on chain yet); the driver opens the
round with the root of the leaves it accepts. The ``reveal`` request carries the hospital's
leaf proof (what the tree holds at its index and the sibling hashes); the hospital checks
that the opened round names the manifest it signed and the proof against the root on
chain, and reveals only when the tree holds its own leaf. When it holds something else,
the hospital proves the omission on chain with its own account (``proveLeafMissing``: the
aggregator loses reputation, the hospital counts as done) and keeps its blob. The CKKS key
holder of a merkle round receives the aggregator's signed publication with the release
request and sends it with its reservation (``reserveAndPublish``), as in-process.

Threat model: the driver is the aggregator and may lie in any message. Nothing a hospital
signs names another round, manifest, contract or chain (the EIP-712 domain and message bind
them); nothing the driver forwards is taken on its word: the hospital checks its row on
chain (batched) or recomputes the root from its proof (merkle), and the key holder's
reservation is checked by the contract against the aggregator's signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from chain import (
    Address,
    Digest,
    Ledger,
    SignedCommit,
    SignedPublication,
    TxResult,
    leaf_hash,
    verify_proof,
)
from chain._merkle import domain_separator, signer_of
from deploy._errors import DeploymentError, WireFormatError
from deploy._wire import Scalar, WireMessage
from secagg import CommitmentMismatchError

#: Prefix of a signed commitment's fields (``train`` reply, hospital state).
SIGNED = "signed"
#: Prefix of the aggregator's signed publication's fields (``release`` request, merkle CKKS).
PUBLICATION = "publication"
#: Fields of a hospital's leaf proof in a merkle round's ``reveal`` request.
LEAF_AT_INDEX = "leaf.at_index"
LEAF_PROOF = "leaf.proof"
#: Field of the merkle round's leaf set in the key holder's ``release`` request.
LEAF_SET = "leaf_set"

_WORD = 32


class LeafOmittedError(DeploymentError):
    """A merkle round's root does not hold this hospital's signed leaf: it proved the
    omission on chain (``tx``) and keeps its blob."""

    def __init__(self, message: str, *, tx: TxResult) -> None:
        super().__init__(message)
        self.tx = tx


class AlreadySignedError(DeploymentError):
    """A merkle hospital asked to sign a second leaf for a round it already signed one for
    (or an earlier round): it refuses before training. Two different leaves of one client
    for a round are an equivocation anyone can prove on chain against the client
    (``proveConflictingLeaf``), so a driver must not be able to obtain them."""


class InclusionProofError(CommitmentMismatchError):
    """A merkle round's ``reveal`` came with no valid proof against the root on chain (or
    the round names another manifest than the one the hospital signed): it keeps its blob."""


# ------------------------------------------------------------------- signed commitments
def signed_commit_fields(signed: SignedCommit, *, prefix: str = SIGNED) -> dict[str, Scalar]:
    """The wire fields of a signed commitment (the client is the sender's own address)."""
    return {
        f"{prefix}.round": signed.round_id,
        f"{prefix}.manifest_digest": bytes(signed.manifest_digest),
        f"{prefix}.blob_digest": bytes(signed.blob_digest),
        f"{prefix}.event_digest": bytes(signed.event_digest),
        f"{prefix}.epsilon_fixed": signed.epsilon_fixed,
        f"{prefix}.v": signed.v,
        f"{prefix}.r": bytes(signed.r),
        f"{prefix}.s": bytes(signed.s),
    }


def has_signed_commit(message: WireMessage, *, prefix: str = SIGNED) -> bool:
    return f"{prefix}.v" in message.fields


def signed_commit_from(message: WireMessage, *, client: str, prefix: str = SIGNED) -> SignedCommit:
    """The signed commitment in ``message``, for ``client`` (the address the receiver knows
    the sender by: a row is never attributed to the address it names itself).
    :class:`WireFormatError` for a missing field, a digest that is not 32 bytes, or an
    epsilon or ``v`` out of range."""
    digests = {}
    for name in ("manifest_digest", "blob_digest", "event_digest", "r", "s"):
        value = message.blob(f"{prefix}.{name}")
        if len(value) != _WORD:
            raise WireFormatError(f"{message.type}: {prefix}.{name} must be 32 bytes")
        digests[name] = value
    epsilon_fixed = message.integer(f"{prefix}.epsilon_fixed")
    v = message.integer(f"{prefix}.v")
    if not 0 <= epsilon_fixed < 2**64 or not 0 <= v < 256:
        raise WireFormatError(f"{message.type}: {prefix}.epsilon_fixed or {prefix}.v out of range")
    return SignedCommit(
        round_id=message.integer(f"{prefix}.round"),
        client=Address(to_checksum_address(client)),
        manifest_digest=Digest(digests["manifest_digest"]),
        blob_digest=Digest(digests["blob_digest"]),
        event_digest=Digest(digests["event_digest"]),
        epsilon_fixed=epsilon_fixed,
        v=v,
        r=digests["r"],
        s=digests["s"],
    )


def refusal_of(
    ledger: Ledger, signed: SignedCommit, *, round_id: int, manifest_digest: bytes
) -> str | None:
    """Why the driver refuses a hospital's signed row before any transaction (None: it
    would be accepted): another round, another manifest, or no valid signature of the
    hospital's account on this ledger."""
    if signed.round_id != round_id:
        return f"signed round {signed.round_id}, not round {round_id}"
    if bytes(signed.manifest_digest) != bytes(manifest_digest):
        return "signed another manifest than the round's"
    domain = domain_separator(chain_id=ledger.chain_id, verifying_contract=ledger.address)
    signer = signer_of(signed, domain=domain)
    if signer is None or signer.lower() != signed.client.lower():
        return "invalid signature: not signed by the hospital's ledger account"
    return None


def check_batched_row(ledger: Ledger, round_id: int, signed: SignedCommit) -> None:
    """Batched rounds, before a hospital reveals: its commitment is on chain exactly as it
    signed it (blob, event, epsilon); else :class:`CommitmentMismatchError`, and the blob
    stays private."""
    for commitment in ledger.commitments(round_id):
        if commitment.client.lower() != signed.client.lower():
            continue
        if (
            bytes(commitment.blob_digest) == bytes(signed.blob_digest)
            and bytes(commitment.event_digest) == bytes(signed.event_digest)
            and commitment.epsilon_fixed == signed.epsilon_fixed
        ):
            return
        raise CommitmentMismatchError(
            f"round {round_id}: the commitment on chain is not the one this hospital signed"
        )
    raise CommitmentMismatchError(
        f"round {round_id}: this hospital's signed commitment is not on chain (left out of "
        "the batch); the blob stays private"
    )


# ------------------------------------------------------------------------- leaf proofs
def leaf_proof_fields(at_index: bytes, proof: tuple[bytes, ...]) -> dict[str, Scalar]:
    """A merkle round's ``reveal`` fields: what the tree holds at the hospital's index and
    the sibling hashes, bottom-up, concatenated (32 bytes each)."""
    return {LEAF_AT_INDEX: bytes(at_index), LEAF_PROOF: b"".join(bytes(p) for p in proof)}


@dataclass(frozen=True)
class LeafProof:
    """A hospital's checked view of a merkle root: whether the tree holds its own leaf at
    its index, and the proof of what it holds there (what an omission proof sends)."""

    included: bool
    at_index: bytes
    proof: tuple[bytes, ...]


def check_leaf(ledger: Ledger, message: WireMessage, signed: SignedCommit) -> LeafProof:
    """A hospital's check of a merkle round before it reveals, with the proof the
    ``reveal`` request carries: the round on chain must name the manifest it signed, and
    the proof must lead to the root on chain from the hospital's own index (read from the
    chain, not the request). Raises :class:`InclusionProofError` when it does not (no
    root, another manifest, a proof that does not verify): nothing can be proven then."""
    round_id = signed.round_id
    info = ledger.round_info(round_id)
    if not info.merkle or info.merkle_root is None:
        raise InclusionProofError(f"round {round_id}: no merkle root on chain")
    if bytes(info.config_digest) != bytes(signed.manifest_digest):
        raise InclusionProofError(
            f"round {round_id}: the round on chain names another manifest than the one this "
            "hospital signed; the blob stays private"
        )
    at_index, proof = _leaf_proof(message)
    lowered = [c.lower() for c in info.clients]
    if signed.client.lower() not in lowered:
        raise InclusionProofError(f"round {round_id}: this hospital is not selected on chain")
    index = lowered.index(signed.client.lower())
    if not verify_proof(info.merkle_root, len(info.clients), index, at_index, proof):
        raise InclusionProofError(
            f"round {round_id}: the leaf proof does not lead to the root on chain; the blob "
            "stays private"
        )
    domain = domain_separator(chain_id=ledger.chain_id, verifying_contract=ledger.address)
    mine = bytes(leaf_hash(signed, domain=domain))
    return LeafProof(included=at_index == mine, at_index=at_index, proof=proof)


def _leaf_proof(message: WireMessage) -> tuple[bytes, tuple[bytes, ...]]:
    at_index = message.blob(LEAF_AT_INDEX)
    packed = message.blob(LEAF_PROOF)
    if len(at_index) != _WORD or len(packed) % _WORD:
        raise WireFormatError(f"{message.type}: a leaf proof is made of 32-byte hashes")
    return at_index, tuple(packed[i : i + _WORD] for i in range(0, len(packed), _WORD))


# ---------------------------------------------------------------------- publications
def publication_fields(publication: SignedPublication) -> dict[str, Scalar]:
    """The ``release`` fields of a merkle round's signed publication (CKKS)."""
    return {
        f"{PUBLICATION}.round": publication.round_id,
        f"{PUBLICATION}.aggregate_digest": bytes(publication.aggregate_digest),
        f"{PUBLICATION}.participant_words": b"".join(
            w.to_bytes(_WORD, "big") for w in publication.participant_words
        ),
        f"{PUBLICATION}.aggregator": str(publication.aggregator),
        f"{PUBLICATION}.v": publication.v,
        f"{PUBLICATION}.r": bytes(publication.r),
        f"{PUBLICATION}.s": bytes(publication.s),
    }


def has_publication(message: WireMessage) -> bool:
    return f"{PUBLICATION}.v" in message.fields


def publication_from(message: WireMessage) -> SignedPublication:
    """The aggregator's signed publication in a ``release`` request (unchecked here: the
    key holder's :func:`secagg.check_aggregate` and the contract check it)."""
    words = message.blob(f"{PUBLICATION}.participant_words")
    digest = message.blob(f"{PUBLICATION}.aggregate_digest")
    r, s = message.blob(f"{PUBLICATION}.r"), message.blob(f"{PUBLICATION}.s")
    if not words or len(words) % _WORD or {len(digest), len(r), len(s)} != {_WORD}:
        raise WireFormatError(f"{message.type}: a publication is made of 32-byte words")
    try:
        aggregator = Address(to_checksum_address(message.text(f"{PUBLICATION}.aggregator")))
    except ValueError as error:
        raise WireFormatError(f"{message.type}: {PUBLICATION}.aggregator: {error}") from None
    return SignedPublication(
        round_id=message.integer(f"{PUBLICATION}.round"),
        aggregate_digest=Digest(digest),
        participant_words=tuple(
            int.from_bytes(words[i : i + _WORD], "big") for i in range(0, len(words), _WORD)
        ),
        aggregator=aggregator,
        v=message.integer(f"{PUBLICATION}.v"),
        r=r,
        s=s,
    )


def publication_participants(ledger: Ledger, publication: SignedPublication) -> list[Address]:
    """The participants a merkle round's publication names (its bitmap over the selected
    list on chain)."""
    clients = ledger.round_info(publication.round_id).clients
    words = publication.participant_words
    return [
        c
        for i, c in enumerate(clients)
        if i // 256 < len(words) and (words[i // 256] >> (i % 256)) & 1
    ]


__all__ = [
    "LEAF_SET",
    "AlreadySignedError",
    "InclusionProofError",
    "LeafOmittedError",
    "LeafProof",
    "check_batched_row",
    "check_leaf",
    "has_publication",
    "has_signed_commit",
    "leaf_proof_fields",
    "publication_fields",
    "publication_from",
    "publication_participants",
    "refusal_of",
    "signed_commit_fields",
    "signed_commit_from",
]
