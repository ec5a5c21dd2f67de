"""EIP-712 typed data of a batched commit (signed locally by the client's key) and of a
merkle round's publication (signed by the aggregator, sent by the key holder).

Domain: name ``SecAggConsortiumLedger``, version ``2``, chain id, verifying contract.
Message: ``Commit(uint256 round,address client,bytes32 manifestDigest,bytes32 blobDigest,
bytes32 eventDigest,uint64 epsilon)``. A signature is therefore bound to one chain, one
ledger contract, one round and the manifest the client saw (the contract checks it against
the round's config digest); the contract also rejects high-s (malleable) signatures.
Publication: ``Publish(uint256 round,bytes32 aggregateDigest,bytes32 participantsHash)``,
same domain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from chain._errors import ChainConfigError
from chain._types import (
    Address,
    SignedCommit,
    SignedPublication,
    as_digest,
    epsilon_to_fixed,
)

DOMAIN_NAME = "SecAggConsortiumLedger"
DOMAIN_VERSION = "2"
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

COMMIT_TYPES: dict[str, Any] = {
    "Commit": [
        {"name": "round", "type": "uint256"},
        {"name": "client", "type": "address"},
        {"name": "manifestDigest", "type": "bytes32"},
        {"name": "blobDigest", "type": "bytes32"},
        {"name": "eventDigest", "type": "bytes32"},
        {"name": "epsilon", "type": "uint64"},
    ]
}

PUBLISH_TYPES: dict[str, Any] = {
    "Publish": [
        {"name": "round", "type": "uint256"},
        {"name": "aggregateDigest", "type": "bytes32"},
        {"name": "participantsHash", "type": "bytes32"},
    ]
}


def _domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    if chain_id <= 0:
        raise ChainConfigError(f"chain_id must be > 0, got {chain_id}")
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(verifying_contract),
    }


def sign_publication(
    account: LocalAccount,
    *,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    aggregate_digest: bytes,
    participant_words: tuple[int, ...],
) -> SignedPublication:
    """The aggregator signs the publication of merkle round ``round_id``: the aggregate's
    digest and the participants bitmap (the key holder sends it with its reservation)."""
    if round_id < 0:
        raise ChainConfigError(f"round_id must be >= 0, got {round_id}")
    unsigned = SignedPublication(
        round_id=round_id,
        aggregate_digest=as_digest(aggregate_digest, field="aggregate_digest"),
        participant_words=tuple(int(w) for w in participant_words),
        aggregator=Address(account.address),
        v=0,
        r=bytes(32),
        s=bytes(32),
    )
    message = {
        "round": round_id,
        "aggregateDigest": unsigned.aggregate_digest,
        "participantsHash": unsigned.participants_hash,
    }
    signable = encode_typed_data(
        domain_data=_domain(chain_id, verifying_contract),
        message_types=PUBLISH_TYPES,
        message_data=message,
    )
    sig = account.sign_message(signable)
    return dataclasses.replace(
        unsigned, v=int(sig.v), r=int(sig.r).to_bytes(32, "big"), s=int(sig.s).to_bytes(32, "big")
    )


def sign_commit(
    account: LocalAccount,
    *,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    manifest_digest: bytes,
    blob_digest: bytes,
    event_digest: bytes,
    epsilon: float,
) -> SignedCommit:
    """Sign a commitment for ``round_id`` of the ledger at ``verifying_contract``, binding
    ``manifest_digest`` (the round manifest the client saw).

    ``epsilon`` is the claimed cumulative epsilon, rounded up to micro-epsilon.
    """
    if round_id < 0:
        raise ChainConfigError(f"round_id must be >= 0, got {round_id}")
    domain = _domain(chain_id, verifying_contract)
    manifest = as_digest(manifest_digest, field="manifest_digest")
    blob = as_digest(blob_digest, field="blob_digest")
    event = as_digest(event_digest, field="event_digest")
    eps = epsilon_to_fixed(epsilon)
    message = {
        "round": round_id,
        "client": account.address,
        "manifestDigest": manifest,
        "blobDigest": blob,
        "eventDigest": event,
        "epsilon": eps,
    }
    signable = encode_typed_data(
        domain_data=domain, message_types=COMMIT_TYPES, message_data=message
    )
    sig = account.sign_message(signable)
    return SignedCommit(
        round_id=round_id,
        client=Address(account.address),
        manifest_digest=manifest,
        blob_digest=blob,
        event_digest=event,
        epsilon_fixed=eps,
        v=int(sig.v),
        r=int(sig.r).to_bytes(32, "big"),
        s=int(sig.s).to_bytes(32, "big"),
    )
