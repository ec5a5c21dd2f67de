"""Collective CKKS key generation for a decryption committee (no single key holder).

Mouchet, Troncoso-Pastoriza, Bossuat and Hubaux, "Multiparty Homomorphic Encryption from
Ring-Learning-with-Errors" (PoPETs 2021), section 4: a common random polynomial ``a`` is
expanded from a public 32-byte seed (fixed on the ledger, so no member chooses it); each
member i draws a ternary secret s_i and an error e_i (CSPRNG) and publishes its *public
key share* p_i = -a*s_i + e_i. The collective public key is (sum_i p_i, a), a key of the
secret s = sum_i s_i that nobody holds. It is serialized as an ordinary SEAL public key,
so clients encrypt with the unchanged :class:`~secagg.ckks._client.CKKSClient`.

Everything here is public and deterministic: :func:`collective_public_context` rebuilds
the public context from the committed shares and the seed, and
:func:`verify_public_context` lets a client or the auditor check that the context they
were handed is exactly that (byte for byte, hence digest for digest).

Parameters of the committee live in :class:`CommitteeParams` (size K, threshold T).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations

import numpy as np

from secagg._digest import Digest, keccak256
from secagg._errors import (
    BlobFormatError,
    CommitmentMismatchError,
    InsecureParametersError,
    ParameterMismatchError,
)
from secagg.ckks._blob import pack_coefficients, unpack_coefficients
from secagg.ckks._context import PublicContext
from secagg.ckks._params import CKKSParams, RevealPolicy, wire_prime
from secagg.ckks._seal import CommitteeRing
from secagg.ckks._zq import lagrange, uniform_from_seed

#: Largest committee: subsets are enumerated when partials are cross-checked (C(8, 4) = 70)
#: and the integer Lagrange weights grow with K (see :mod:`secagg.ckks._committee`).
MAX_COMMITTEE_SIZE = 8
CRP_SEED_SIZE = 32
KEY_SHARE_MAGIC = b"SAGK"
KEY_SHARE_VERSION = 1
_CRP_DOMAIN = b"secagg-ckks-crp/v1"
_KEY_SHARE_HEAD = struct.Struct(">4sH32s32sHHH")  # magic, version, params, seed, i, K, T


class CommitteeConfigError(InsecureParametersError):
    """Committee size or threshold out of range (1 <= T <= K <= MAX_COMMITTEE_SIZE)."""


@dataclass(frozen=True)
class CommitteeParams:
    """A decryption committee of ``size`` members (K), any ``threshold`` (T) of which decrypt.

    Members are numbered 1..K (their Shamir evaluation points). ``T == K`` is the n-of-n
    case: each member decrypts with its own key share, no Shamir sharing. ``K == 1`` is
    a single key holder holding the whole secret (the committee code path, for tests).
    """

    size: int
    threshold: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 1 <= self.size <= MAX_COMMITTEE_SIZE:
            raise CommitteeConfigError(
                f"committee_size must be in [1, {MAX_COMMITTEE_SIZE}], got {self.size!r}"
            )
        if not isinstance(self.threshold, int) or not 1 <= self.threshold <= self.size:
            raise CommitteeConfigError(
                f"committee_threshold must be in [1, committee_size={self.size}], "
                f"got {self.threshold!r}"
            )

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(range(1, self.size + 1))

    @property
    def is_additive(self) -> bool:
        """T == K: the secret is the plain sum of the members' shares."""
        return self.threshold == self.size

    @property
    def lagrange_scale(self) -> int:
        """Delta = (K-1)!, which makes Delta * L_j(x) an integer for every subset and point.

        The Lagrange basis value L_j(x) over points in 1..K has a denominator dividing
        prod_{m != j} (j - m) = +-(j-1)!(K-j)!, which divides (K-1)!.
        """
        return 1 if self.is_additive else math.factorial(self.size - 1)

    def weights(self, subset: Sequence[int]) -> dict[int, Fraction]:
        """Exact reconstruction weights at 0 of ``subset`` (all ones when T == K)."""
        if self.is_additive:
            return {member: Fraction(1) for member in subset}
        return lagrange(tuple(subset), at=0)

    def integer_weights(self, subset: Sequence[int]) -> dict[int, int]:
        """mu_j = Delta * lambda_j: the integer factor each member's smudging noise gets."""
        scale = self.lagrange_scale
        out: dict[int, int] = {}
        for member, weight in self.weights(subset).items():
            scaled = weight * scale
            if scaled.denominator != 1:  # pragma: no cover - ruled out by lagrange_scale
                raise CommitteeConfigError("Lagrange weight is not integral after scaling")
            out[member] = int(scaled)
        return out

    def decrypting_subsets(self) -> list[tuple[int, ...]]:
        """Every set of members that can decrypt: all T-subsets (just all members if T == K)."""
        return list(combinations(self.members, self.threshold))

    def worst_noise_factor(self) -> float:
        """max over decrypting subsets S of sqrt(sum_j mu_j^2): the released noise's growth."""
        return max(
            math.sqrt(sum(mu * mu for mu in self.integer_weights(subset).values()))
            for subset in self.decrypting_subsets()
        )

    def weakest_member_factor(self) -> int:
        """min over subsets S and members j in S of |mu_j|: the smallest honest noise factor."""
        return min(
            abs(mu)
            for subset in self.decrypting_subsets()
            for mu in self.integer_weights(subset).values()
        )


@dataclass(frozen=True)
class SmudgingBudget:
    """How much noise each member adds to a partial decryption, and what that gives.

    ``member_std``: std of each member's integer noise e_j (ring units; the member adds
    Delta * e_j). ``release_std``: worst-case std of the noise in a released coordinate
    (value units), at most the reveal policy's flooding std. ``honest_member_std``: the
    smallest std, in value units, that one honest member's noise alone contributes to a
    release; against T - 1 colluding members this is what hides the CKKS error.
    """

    member_std: float
    release_std: float
    honest_member_std: float


def smudging_budget(
    *, params: CKKSParams, committee: CommitteeParams, policy: RevealPolicy
) -> SmudgingBudget:
    """Size each member's smudging so that every release's noise std <= policy.flood_std.

    A polynomial noise of i.i.d. coefficients of std s decodes, two reals per slot, to
    values of std s * sqrt(N / 2) / scale; a release through subset S carries
    sum_j mu_j * e_j, hence std member_std * sqrt(sum mu_j^2) * sqrt(N/2) / scale.
    """
    to_values = math.sqrt(params.poly_modulus_degree / 2) / params.scale
    member_std = policy.flood_std / (to_values * committee.worst_noise_factor())
    return SmudgingBudget(
        member_std=member_std,
        release_std=member_std * committee.worst_noise_factor() * to_values,
        honest_member_std=member_std * committee.weakest_member_factor() * to_values,
    )


def common_random_polynomial(params: CKKSParams, *, crp_seed: bytes) -> np.ndarray:
    """The public polynomial ``a`` (NTT form, uniform mod q) expanded from ``crp_seed``.

    SHAKE256 over a domain tag, the parameters' canonical bytes and the seed; 54-bit words
    are rejection-sampled below q. Uniform residues are uniform in either domain, so ``a``
    is drawn directly in the NTT domain, as SEAL draws its own.
    """
    if not isinstance(crp_seed, bytes) or len(crp_seed) != CRP_SEED_SIZE:
        raise ParameterMismatchError(f"crp_seed must be {CRP_SEED_SIZE} bytes")
    material = _CRP_DOMAIN + params.canonical_bytes() + crp_seed
    return uniform_from_seed(material, params.poly_modulus_degree, wire_prime(params))


@dataclass(frozen=True)
class PublicKeyShare:
    """Member ``member``'s public key share p_i (NTT form), bound to parameters and seed.

    Wire layout (big-endian): magic b"SAGK", version 2 bytes, parameter digest 32, crp
    seed 32, member 2, committee size 2, threshold 2, then N coefficients packed at
    bit_length(q) bits (as in blobs). Its keccak256 digest is what the ledger commits.
    """

    member: int
    committee: CommitteeParams
    params: CKKSParams
    crp_seed: bytes
    coefficients: np.ndarray

    def to_bytes(self) -> bytes:
        head = _KEY_SHARE_HEAD.pack(
            KEY_SHARE_MAGIC,
            KEY_SHARE_VERSION,
            self.params.digest(),
            self.crp_seed,
            self.member,
            self.committee.size,
            self.committee.threshold,
        )
        bits = wire_prime(self.params).bit_length()
        return head + pack_coefficients(self.coefficients.reshape(-1), bits)

    @property
    def digest(self) -> Digest:
        return keccak256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, params: CKKSParams) -> PublicKeyShare:
        """Parse a key share made under ``params``; :class:`BlobFormatError` if malformed."""
        if len(data) < _KEY_SHARE_HEAD.size:
            raise BlobFormatError(f"key share truncated: {len(data)} bytes")
        magic, version, digest, seed, member, size, threshold = _KEY_SHARE_HEAD.unpack_from(data)
        if magic != KEY_SHARE_MAGIC or version != KEY_SHARE_VERSION:
            raise BlobFormatError(f"not a version-{KEY_SHARE_VERSION} key share")
        if digest != params.digest():
            raise ParameterMismatchError("key share was made under other CKKS parameters")
        committee = CommitteeParams(size=size, threshold=threshold)
        if member not in committee.members:
            raise BlobFormatError(f"key share member {member} is not in 1..{size}")
        coefficients = unpack_polys(data[_KEY_SHARE_HEAD.size :], params, count=1)[0]
        return cls(
            member=member,
            committee=committee,
            params=params,
            crp_seed=seed,
            coefficients=coefficients,
        )


def unpack_polys(payload: bytes, params: CKKSParams, *, count: int) -> np.ndarray:
    """``count`` packed polynomials (coefficients < q, checked) as a ``(count, N)`` array."""
    q = wire_prime(params)
    bits = q.bit_length()
    degree = params.poly_modulus_degree
    if len(payload) * 8 != count * degree * bits:
        expected = count * degree * bits // 8
        raise BlobFormatError(f"payload has {len(payload)} bytes, expected {expected}")
    values = unpack_coefficients(payload, count * degree, bits)
    if np.any(values >= np.uint64(q)):
        raise BlobFormatError("coefficient >= q: not a canonical encoding")
    return values.reshape(count, degree)


def collective_public_context(
    params: CKKSParams,
    *,
    committee: CommitteeParams,
    crp_seed: bytes,
    shares: Sequence[bytes],
    share_digests: Sequence[Digest] | None = None,
) -> PublicContext:
    """The public context of the collective key: (sum of the K key shares, a), as SEAL bytes.

    ``shares`` are the members' :class:`PublicKeyShare` bytes, one per member, in any
    order; ``share_digests`` (member order 1..K), when given, are the committed digests
    and each share must match its own. Raises :class:`CommitmentMismatchError` on a digest
    mismatch, :class:`ParameterMismatchError` on a share made for another committee, seed
    or member set.
    """
    q = wire_prime(params)
    parsed = [PublicKeyShare.from_bytes(share, params) for share in shares]
    by_member = {share.member: share for share in parsed}
    if sorted(by_member) != list(committee.members) or len(parsed) != committee.size:
        raise ParameterMismatchError(
            f"need exactly one key share from each of members 1..{committee.size}, got "
            f"{sorted(share.member for share in parsed)}"
        )
    for share in parsed:
        if share.committee != committee or share.crp_seed != crp_seed:
            raise ParameterMismatchError(
                f"key share of member {share.member} was made for another committee or seed"
            )
    if share_digests is not None:
        if len(share_digests) != committee.size:
            raise CommitmentMismatchError("need one committed digest per member")
        for member, committed in zip(committee.members, share_digests, strict=True):
            if by_member[member].digest != committed:
                raise CommitmentMismatchError(
                    f"key share of member {member} does not match its committed digest"
                )
    total = np.zeros(params.poly_modulus_degree, dtype=np.uint64)
    for member in committee.members:
        total = (total + by_member[member].coefficients) % np.uint64(q)
    crp = common_random_polynomial(params, crp_seed=crp_seed)
    public_key = CommitteeRing(params).public_key_bytes(total, crp)
    return PublicContext(params=params, public_key=public_key)


def verify_public_context(
    context: PublicContext | bytes,
    *,
    committee: CommitteeParams,
    crp_seed: bytes,
    shares: Sequence[bytes],
    share_digests: Sequence[Digest] | None = None,
) -> PublicContext:
    """Check that ``context`` is the collective key of the committed shares (for clients
    and the auditor); returns it parsed. :class:`CommitmentMismatchError` otherwise."""
    if isinstance(context, bytes | bytearray):
        context = PublicContext.from_bytes(bytes(context))
    expected = collective_public_context(
        context.params,
        committee=committee,
        crp_seed=crp_seed,
        shares=shares,
        share_digests=share_digests,
    )
    if expected.to_bytes() != context.to_bytes():
        raise CommitmentMismatchError(
            "public context is not the collective key of the committed key shares"
        )
    return context
