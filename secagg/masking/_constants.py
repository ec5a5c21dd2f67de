"""Shared constants of the masking protocol: stages, message kinds, wire layout, domains.

Both roles (``_client.py`` and ``_server.py``) import their stage names and domain labels
from here, so a reader finds every byte string that enters a key derivation in one place.
"""

from __future__ import annotations

import enum
from typing import Final

MAGIC: Final = b"SAGM"
"""First four bytes of every masking message (SecAgg Masking)."""

FORMAT_VERSION: Final = 2
"""2: ephemeral-static share encryption, signed advertisements, consistency check, rebuttals."""

SERVER_ID: Final = 2**64 - 1
"""Sender id the server writes into the messages it sends (never a client id)."""

MAX_CLIENT_ID: Final = 2**63 - 1
"""Client ids are 0 <= id <= MAX_CLIENT_ID; Shamir evaluates at x = id + 1."""

FIELD_PRIME: Final = 2**521 - 1
"""Shamir shares live in GF(2^521 - 1), a Mersenne prime above every 256-bit secret."""

SHARE_BYTES: Final = 66
"""Bytes of one Shamir share value (ceil(521 / 8))."""

SECRET_BYTES: Final = 32
"""Self-mask seeds and X25519 private keys: 256-bit secrets."""

PUBLIC_KEY_BYTES: Final = 32
COMMITMENT_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
"""An Ed25519 signature under a client's round signing key."""
LEDGER_SIGNATURE_BYTES: Final = 65
"""An EIP-191 secp256k1 signature (r, s, v) by a client's ledger account."""

# Domain separation labels: every derived key and commitment names its purpose.
LABEL_SHARE_KEY: Final = b"secagg/masking/v1/share-encryption-key"
LABEL_SHARE_AD: Final = b"secagg/masking/v1/share-associated-data"
LABEL_PAIR_MASK: Final = b"secagg/masking/v1/pairwise-mask-key"
LABEL_SELF_COMMIT: Final = b"secagg/masking/v1/self-mask-commitment"
LABEL_GRAPH: Final = b"secagg/masking/v1/neighbour-graph"
LABEL_PARAMS: Final = b"secagg/masking/v1/round-parameters"
LABEL_ADVERTISEMENT: Final = b"secagg/masking/v2/key-advertisement"
LABEL_SHARE_ITEM: Final = b"secagg/masking/v2/sealed-share-item"
LABEL_ACCUSATION: Final = b"secagg/masking/v2/share-accusation"
LABEL_CONSISTENCY: Final = b"secagg/masking/v2/survivor-set"


class Stage(enum.IntEnum):
    """Protocol stages, in order (Bonawitz et al. 2017, rounds 0 to 4).

    ``CONSISTENCY_CHECK`` runs only in authenticated rounds (clients with ledger accounts);
    otherwise the masked-input stage leads straight to ``UNMASK``.
    """

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASK = 4
    DONE = 5


class MessageKind(enum.IntEnum):
    """Wire tag of each message; the stage it belongs to is :data:`STAGE_OF`."""

    ADVERTISE_KEYS = 1
    KEYS_BROADCAST = 2
    SHARE_KEYS = 3
    SHARES_DELIVERY = 4
    MASKED_INPUT = 5
    UNMASK_REQUEST = 6
    UNMASK_RESPONSE = 7
    AGGREGATE = 8
    REBUTTAL_REQUEST = 9
    REBUTTAL = 10
    CONSISTENCY_REQUEST = 11
    CONSISTENCY_SIGNATURE = 12
    CONSISTENCY_PROOF = 13


STAGE_OF: Final = {
    MessageKind.ADVERTISE_KEYS: Stage.ADVERTISE_KEYS,
    MessageKind.KEYS_BROADCAST: Stage.SHARE_KEYS,
    MessageKind.SHARE_KEYS: Stage.SHARE_KEYS,
    MessageKind.SHARES_DELIVERY: Stage.MASKED_INPUT,
    MessageKind.MASKED_INPUT: Stage.MASKED_INPUT,
    MessageKind.UNMASK_REQUEST: Stage.UNMASK,
    MessageKind.UNMASK_RESPONSE: Stage.UNMASK,
    MessageKind.AGGREGATE: Stage.UNMASK,
    MessageKind.REBUTTAL_REQUEST: Stage.MASKED_INPUT,
    MessageKind.REBUTTAL: Stage.MASKED_INPUT,
    MessageKind.CONSISTENCY_REQUEST: Stage.CONSISTENCY_CHECK,
    MessageKind.CONSISTENCY_SIGNATURE: Stage.CONSISTENCY_CHECK,
    MessageKind.CONSISTENCY_PROOF: Stage.CONSISTENCY_CHECK,
}

DTYPE_UINT32: Final = 4
"""Wire code of the only element type a masked vector may have (little-endian uint32)."""
