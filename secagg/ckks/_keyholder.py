"""Key holder role: owns the secret key, decrypts aggregates only, floods and rounds.

Threat model: honest-but-curious and not colluding with the aggregator. The key holder
creates the SEAL keys, hands out only the :class:`~secagg.ckks._context.PublicContext`
(public key, no secret/relinearization/Galois keys) and never receives a client blob: it
refuses anything that is not an aggregate blob, and aggregates that list fewer than
``min_clients`` distinct client-blob digests.

Release (Li and Micciancio, EUROCRYPT 2021). A CKKS decryption returns m + e, where e
depends linearly on the secret key; whoever knows the ciphertext and m (for example an
aggregator that builds an "aggregate" from ciphertexts it encrypted itself, which the
public key lets it do) can collect such equations and recover the key. Before release
the key holder therefore adds Gaussian noise of std ``2**-flood_std_bits`` and rounds to
the grid ``2**-precision_bits``. The noise is a secret PRF of the aggregate's digest
(:mod:`secagg.ckks._flooding`): asking again for the same aggregate returns identical
bytes, so averaging repeated releases strips nothing; the protocol layer also reserves
each round's one release on the ledger before decrypting.

Residual risk, stated plainly: with the aggregation preset the CKKS error of a 100-client
sum has a std of about 2^-26.3 and a single ciphertext about 2^-29.6 (measured), while the
defaults flood with std 2^-24 and round to 2^-24. That makes each released coordinate's
distribution depend on e only through a shift of 2^-3..2^-6 of the flooding std, a small
but *not* negligible statistical distance per coordinate; provable IND-CPA^D security
would need flooding ~2^(lambda/2) times the error, i.e. tens of extra bits of modulus and
an error far above 1e-6. Many decryptions of attacker-chosen aggregates can therefore
still accumulate information about the key. Mitigations at the protocol layer
(:mod:`secagg._roles`): the key holder decrypts only an aggregate that is byte for byte
the recombination of the round's committed blobs, at most once per round; the auditor
re-checks after the fact. Keys should still be rotated (a fresh :class:`KeyHolder`) as
decryptions accumulate (:attr:`KeyHolder.decryptions` counts distinct aggregates); local
DP bounds what any leak reveals about training data.
"""

from __future__ import annotations

import os

import numpy as np

from secagg._errors import BlobFormatError, DuplicateClientError, InsufficientClientsError
from secagg.ckks._blob import BlobHeader, blob_digest, parse_blob
from secagg.ckks._context import PublicContext
from secagg.ckks._flooding import PRF_KEY_BYTES, flood_and_round, flooding_seed
from secagg.ckks._params import CKKSParams, RevealPolicy
from secagg.ckks._seal import SecretSealKeys


class NotAnAggregateError(BlobFormatError):
    """The key holder was handed a client blob (it decrypts aggregates only)."""


def require_releasable(header: BlobHeader, policy: RevealPolicy, *, who: str) -> None:
    """Refuse to decrypt anything but an aggregate of at least ``min_clients`` distinct
    client blobs (the same rule for a key holder and every committee member)."""
    if not header.is_aggregate:
        raise NotAnAggregateError(f"{who} decrypt aggregate blobs only")
    if len(set(header.inputs)) != len(header.inputs):
        raise DuplicateClientError("aggregate lists the same client blob more than once")
    if len(header.inputs) < policy.min_clients:
        raise InsufficientClientsError(
            f"aggregate combines {len(header.inputs)} client blobs, fewer than "
            f"min_clients={policy.min_clients}"
        )


class KeyHolder:
    """Creates the CKKS keys; exports the public context; reveals aggregates only."""

    def __init__(self, *, params: CKKSParams, policy: RevealPolicy) -> None:
        self.params = params
        self.policy = policy
        self._keys = SecretSealKeys(params)
        self.public_context = PublicContext(params=params, public_key=self._keys.public_key_bytes)
        self.context_digest = self.public_context.digest
        self._flooding_key = os.urandom(PRF_KEY_BYTES)  # secret; never leaves the key holder
        self._released: set[bytes] = set()
        self.decryptions = 0

    def export_secret(self) -> bytes:
        """The key holder's secrets (flooding PRF key, public and secret SEAL keys) as bytes,
        for a deployed key holder that keeps them on its own node between processes
        (deploy/). Never send them: :meth:`restore` is their only reader."""
        public = self._keys.public_key_bytes
        return b"".join(
            [
                self._flooding_key,
                len(public).to_bytes(8, "little"),
                public,
                self._keys.export_secret(),
            ]
        )

    @classmethod
    def restore(cls, *, params: CKKSParams, policy: RevealPolicy, secret: bytes) -> KeyHolder:
        """The key holder :meth:`export_secret` saved (same parameters and policy)."""
        if len(secret) < PRF_KEY_BYTES + 8:
            raise BlobFormatError("truncated key holder secret")
        flooding_key = secret[:PRF_KEY_BYTES]
        size = int.from_bytes(secret[PRF_KEY_BYTES : PRF_KEY_BYTES + 8], "little")
        public = secret[PRF_KEY_BYTES + 8 : PRF_KEY_BYTES + 8 + size]
        if len(public) != size:
            raise BlobFormatError("truncated key holder secret")
        holder = cls.__new__(cls)
        holder.params = params
        holder.policy = policy
        holder._keys = SecretSealKeys.restore(
            params, secret=secret[PRF_KEY_BYTES + 8 + size :], public_key_bytes=public
        )
        holder.public_context = PublicContext(params=params, public_key=public)
        holder.context_digest = holder.public_context.digest
        holder._flooding_key = flooding_key
        holder._released = set()
        holder.decryptions = 0
        return holder

    def public_context_bytes(self) -> bytes:
        """The serialized public context: parameters and public key, no secret material."""
        return self.public_context.to_bytes()

    def reveal(self, aggregate: bytes) -> np.ndarray:
        """Decrypt an aggregate blob; return the flooded, rounded sum (float64).

        Deterministic per aggregate: the same aggregate bytes give identical output (the
        decryption is deterministic and the flooding noise a secret PRF of the digest).

        Raises :class:`NotAnAggregateError` for a client blob,
        :class:`InsufficientClientsError` below ``min_clients`` inputs,
        :class:`DuplicateClientError` when the aggregate lists a blob twice, and the
        blob parser's errors (other key or parameters: :class:`ParameterMismatchError`).
        """
        parsed = parse_blob(aggregate, self.params, context_digest=self.context_digest)
        header = parsed.header
        require_releasable(header, self.policy, who="key holders")
        decrypted = self._keys.decrypt(parsed.coefficients)[: header.element_count]
        digest = blob_digest(aggregate)
        if digest not in self._released:
            self._released.add(digest)
            self.decryptions += 1
        return flood_and_round(
            decrypted,
            flood_std=self.policy.flood_std,
            grid=self.policy.grid,
            seed=flooding_seed(self._flooding_key, digest),
        )
