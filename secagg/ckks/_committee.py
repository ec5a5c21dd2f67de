"""Committee decryption: any T of K members release an aggregate; fewer learn nothing.

Roles. A :class:`CommitteeMember` holds one share of the collective secret key (see
:mod:`secagg.ckks._committee_keys` for key generation). Given an aggregate blob and the
committed client blobs, it first recombines the blobs itself and compares the aggregate
byte for byte (:meth:`CommitteeMember.verify_aggregate`, :func:`check_aggregate`), then
publishes a :class:`PartialDecryption`.
Anyone holding the aggregate and partials of T members releases the sum with
:func:`combine_partials`, which needs no secret.

Threshold (T < K). Each member i Shamir-shares its NTT-form secret s_i over Z_q,
coefficient by coefficient, at the points 1..K (degree T-1); member j's key share is
t_j = sum_i f_i(j), a Shamir share of s = sum_i s_i. With T == K nothing is shared:
t_j = s_j and the secret is the plain sum.

Partial decryption. Member j publishes, for every ciphertext (c0, c1) of the aggregate,
the *unweighted* d_j = c1 * t_j + Delta * e_j, with Delta = (K-1)! and e_j smudging
noise. The combiner picks T members S, multiplies each d_j by its Lagrange weight
lambda_j mod q and adds c0: c0 + sum lambda_j d_j = m + e_ct + sum mu_j e_j with the
small *integers* mu_j = Delta * lambda_j, so the noise stays small although lambda_j is
a full-size residue. (Weighting before smudging, each member knowing S, would give every
honest member 1/sqrt(T) of the release noise, a better margin for T < K, see below, but
tie each partial to one subset; unweighted partials let one partial per member serve
every subset and make the partials cross-checkable, below.)

Smudging (Li and Micciancio, EUROCRYPT 2021). A CKKS decryption reveals m + e_ct, and
e_ct depends on the secret key; T - 1 colluding members who also know m (or chose the
ciphertext) see, besides their own noise, e_ct + mu_h * e_h of an honest member h. Each
member's e_j is a rounded Gaussian from the OS CSPRNG (pycryptodome), sized by
:func:`~secagg.ckks._committee_keys.smudging_budget` so that every possible release
carries noise of std at most the reveal policy's flooding std (2^-24 by default), the
same as a single key holder's release, which keeps the 100-client sum within 1e-6.
Margin, stated plainly (aggregation preset, 100-client sum, default flooding 2^-24,
measured; ``benchmarks/bench_ckks.py`` prints the honest-member std): the
secret-dependent CKKS error has a std of 2^-26.3 in value units under a single key,
2^-25.5 under a 3-member collective key and 2^-25.1 under a 5-member one (the
collective secret is a sum of K ternary secrets). One honest member's noise alone has
std 2^-24 * min|mu| / max_S ||mu|| (:attr:`SmudgingBudget.honest_member_std`):
2^-24.8 for 3-of-3 (0.7 bits above the error), 2^-25.2 for 5-of-5 (level with it),
2^-26.9 for 2-of-3 (1.4 bits below) and 2^-30.8 for 4-of-5 (5.7 bits below; the Lagrange
weights at 0 of points 1..5 are large and uneven). A single key holder floods 2.3 bits
above its error. So the statistical distance that hides the error per coordinate is far
from negligible, and provable IND-CPA^D security (smudging ~2^40 above the error) is
impossible at these parameters, as for the single key holder (see
:mod:`secagg.ckks._keyholder`); raising ``flood_std_bits`` to 23 buys one bit and still
keeps the 100-client error under 1e-6. Members therefore decrypt only aggregates that
recombine committed blobs of at least ``min_clients`` distinct clients, and count their
decryptions for key rotation.

Verifiability (:func:`combine_partials`). With n > T partials, they must all lie on one
degree-(T-1) polynomial up to the smudging noise: each member j outside a base of T
members (the lowest indices) has its inverse-NTT partial compared with the base's
interpolation at j, with the hard bound (Delta + sum_k |Delta * L_k(j)|) * max|e|
(smudging is clipped, so honest partials never fail it). What this proves: if the base's
partials are honest, any other partial that deviates beyond the bound is detected and
nothing is released; with one wrong partial and n >= T + 2 it is named
(:class:`PartialMismatchError` ``.culprits``): the wrong member is then the only one whose
removal leaves a consistent set of at least T + 1 (the tests exercise this). A wrong
partial inside the base shows, through the factors L_k(j), in every other member's
residual; it escapes only if crafted to keep all of them within the bound, and is then
typically refused without a name because the release leaves the range a sum can take.
With n == T + 1 a deviation is detected but not attributed; with n == T (always when
T == K) there is no redundancy and only that range check applies. Colluding members can
make wrong partials mutually consistent: no claim there. Nor does the check prove that
the shares dealt at key generation were consistent (no verifiable secret sharing for
lattice secrets here) or bind a partial to the member's committed key share (that needs
a zero-knowledge proof of correct decryption).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from secagg._digest import Digest, keccak256
from secagg._errors import (
    BlobFormatError,
    CommitmentMismatchError,
    ParameterMismatchError,
    ProtocolAbortError,
    SecAggError,
)
from secagg.ckks._aggregator import combine_blobs
from secagg.ckks._blob import blob_digest, pack_coefficients, parse_blob
from secagg.ckks._committee_keys import (
    CRP_SEED_SIZE,
    CommitteeParams,
    PublicKeyShare,
    collective_public_context,
    common_random_polynomial,
    smudging_budget,
    unpack_polys,
)
from secagg.ckks._context import PublicContext
from secagg.ckks._keyholder import require_releasable
from secagg.ckks._params import CKKSParams, RevealPolicy, wire_prime
from secagg.ckks._seal import CommitteeRing
from secagg.ckks._zq import (
    SMUDGING_TAIL_STDS,
    addmod,
    centered,
    centered_binomial,
    fraction_mod,
    from_signed,
    lagrange,
    mulmod,
    shamir_shares,
    smudging_noise,
    submod,
    sum_mod,
    ternary,
)

PARTIAL_MAGIC = b"SAGD"
PARTIAL_VERSION = 1
SECRET_SHARE_MAGIC = b"SAGS"
_PARTIAL_HEAD = struct.Struct(">4sHHHH32s32sI")  # magic, version, j, K, T, context, agg, chunks
_SECRET_SHARE_HEAD = struct.Struct(">4sH32s32sHHHH")  # magic, version, params, seed, i, j, K, T
MEMBER_STATE_MAGIC = b"SAGT"
# magic, version, params, seed, member, K, T, decryptions, joined, polys, key share, context
_MEMBER_STATE_HEAD = struct.Struct(">4sH32s32sHHHIBHII")


class CommitteeSetupError(ProtocolAbortError):
    """Key generation is incomplete or inconsistent (a share is missing or misaddressed)."""


class InsufficientPartialsError(ProtocolAbortError):
    """Fewer than T members published a partial decryption: nothing can be released."""


class PartialMismatchError(SecAggError):
    """Partial decryptions are inconsistent; nothing is released.

    ``culprits`` names the members whose partials were shown wrong (empty when the
    inconsistency cannot be attributed, see :mod:`secagg.ckks._committee`).
    """

    def __init__(self, message: str, *, culprits: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.culprits = culprits


def check_aggregate(
    public_context: PublicContext | bytes, aggregate: bytes, committed_blobs: Sequence[bytes]
) -> None:
    """Recombine ``committed_blobs`` (in the committed order) and compare with ``aggregate``.

    Raises :class:`CommitmentMismatchError` unless they are byte-identical; an invalid
    committed blob raises the blob parser's error (nothing is skipped).
    """
    if not committed_blobs:
        raise CommitmentMismatchError("no committed blobs: refusing to decrypt anything")
    recombined = combine_blobs(public_context, committed_blobs)
    if recombined != aggregate:
        raise CommitmentMismatchError(
            "the aggregate is not the recombination of the committed client blobs"
        )


@dataclass(frozen=True)
class PartialDecryption:
    """Member ``member``'s partial decryption of one aggregate: ``(chunks, N)`` NTT form.

    Wire layout (big-endian): magic b"SAGD", version 2, member 2, committee size 2,
    threshold 2, context digest 32, aggregate digest 32, chunks 4, then the polynomials
    packed at bit_length(q) bits. :attr:`digest` is what the member attests on the ledger.
    """

    member: int
    committee: CommitteeParams
    context_digest: Digest
    aggregate_digest: Digest
    coefficients: np.ndarray
    bits: int

    def to_bytes(self) -> bytes:
        head = _PARTIAL_HEAD.pack(
            PARTIAL_MAGIC,
            PARTIAL_VERSION,
            self.member,
            self.committee.size,
            self.committee.threshold,
            self.context_digest,
            self.aggregate_digest,
            self.coefficients.shape[0],
        )
        return head + pack_coefficients(self.coefficients.reshape(-1), self.bits)

    @property
    def digest(self) -> Digest:
        return keccak256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, params: CKKSParams) -> PartialDecryption:
        """Parse a partial made under ``params``; :class:`BlobFormatError` if malformed."""
        if len(data) < _PARTIAL_HEAD.size:
            raise BlobFormatError(f"partial decryption truncated: {len(data)} bytes")
        magic, version, member, size, threshold, context, aggregate, chunks = (
            _PARTIAL_HEAD.unpack_from(data)
        )
        if magic != PARTIAL_MAGIC or version != PARTIAL_VERSION:
            raise BlobFormatError(f"not a version-{PARTIAL_VERSION} partial decryption")
        committee = CommitteeParams(size=size, threshold=threshold)
        if member not in committee.members:
            raise BlobFormatError(f"partial from member {member}, not in 1..{size}")
        coefficients = unpack_polys(data[_PARTIAL_HEAD.size :], params, count=chunks)
        return cls(
            member=member,
            committee=committee,
            context_digest=Digest(context),
            aggregate_digest=Digest(aggregate),
            coefficients=coefficients,
            bits=wire_prime(params).bit_length(),
        )


class CommitteeMember:
    """One committee member: its key share, in memory only, and partial decryption.

    Lifecycle: ``CommitteeMember(...)`` draws s_i; publish :attr:`public_key_share` (its
    digest goes on the ledger); when T < K, send each :meth:`deal_secret_shares` message
    to its recipient over an authenticated, encrypted channel (they are secret) and
    :meth:`receive_secret_share` the others'; then :meth:`join` with all K public key
    shares, which builds and checks the collective public context. Afterwards, for each
    aggregate, :meth:`verify_aggregate` against the committed client blobs, then
    :meth:`partial_decrypt` (or both in one call, passing ``committed_blobs``). The secret
    is dropped as soon as it has been dealt. Serialized only by :meth:`export_secret` for
    a member that runs each message in a fresh process (a deployed member's own node,
    :mod:`deploy._committee`); that state never leaves the node.
    """

    def __init__(
        self,
        *,
        member: int,
        params: CKKSParams,
        committee: CommitteeParams,
        policy: RevealPolicy,
        crp_seed: bytes,
    ) -> None:
        if member not in committee.members:
            raise CommitteeSetupError(f"member must be in 1..{committee.size}, got {member}")
        if not isinstance(crp_seed, bytes) or len(crp_seed) != CRP_SEED_SIZE:
            raise ParameterMismatchError(f"crp_seed must be {CRP_SEED_SIZE} bytes")
        self.member = member
        self.params = params
        self.committee = committee
        self.policy = policy
        self.crp_seed = crp_seed
        self.decryptions = 0
        self._ring = CommitteeRing(params)
        self._q = self._ring.wire_prime
        self._noise_std = smudging_budget(
            params=params, committee=committee, policy=policy
        ).member_std
        degree = params.poly_modulus_degree
        secret, error = ternary(degree), centered_binomial(degree)
        transformed = self._ring.secret_to_ntt(from_signed(np.stack([secret, error]), self._q))
        secret_ntt, error_ntt = transformed[0], transformed[1]
        crp = common_random_polynomial(params, crp_seed=crp_seed)
        p = submod(error_ntt, mulmod(crp, secret_ntt, self._q), self._q)
        self.public_key_share = PublicKeyShare(
            member=member, committee=committee, params=params, crp_seed=crp_seed, coefficients=p
        ).to_bytes()
        self._received: dict[int, np.ndarray] = {}
        self._dealt: dict[int, np.ndarray] | None = None
        if committee.is_additive:
            self._received[member] = secret_ntt
        else:
            self._dealt = shamir_shares(
                secret_ntt, threshold=committee.threshold, points=committee.members, q=self._q
            )
            self._received[member] = self._dealt.pop(member)
        self._key_share: np.ndarray | None = None
        self._checked: set[Digest] = set()
        self.context: PublicContext | None = None

    def export_secret(self) -> bytes:
        """This member's secret state (its key share, or before :meth:`join` the Shamir
        shares it holds), for :meth:`restore` on the same node; refused while shares are
        still to be dealt. Secret: it must never be sent or logged."""
        if self._dealt is not None:
            raise CommitteeSetupError(f"member {self.member} has not dealt its shares yet")
        context = b"" if self.context is None else self.context.to_bytes()
        joined = self._key_share is not None
        polys = {0: self._key_share} if self._key_share is not None else self._received
        head = _MEMBER_STATE_HEAD.pack(
            MEMBER_STATE_MAGIC,
            1,
            self.params.digest(),
            self.crp_seed,
            self.member,
            self.committee.size,
            self.committee.threshold,
            self.decryptions,
            int(joined),
            len(polys),
            len(self.public_key_share),
            len(context),
        )
        indices = b"".join(struct.pack(">H", j) for j in sorted(polys))
        bits = self._q.bit_length()
        packed = b"".join(pack_coefficients(polys[j], bits) for j in sorted(polys))
        return head + indices + self.public_key_share + context + packed

    @classmethod
    def restore(
        cls, secret: bytes, *, params: CKKSParams, committee: CommitteeParams, policy: RevealPolicy
    ) -> CommitteeMember:
        """The member :meth:`export_secret` saved, under the same parameters and committee
        (:class:`CommitteeSetupError` otherwise, :class:`BlobFormatError` if malformed)."""
        if len(secret) < _MEMBER_STATE_HEAD.size:
            raise BlobFormatError("committee member state truncated")
        (magic, version, params_digest, seed, member, size, threshold, decryptions, joined,
         count, key_length, context_length) = _MEMBER_STATE_HEAD.unpack_from(secret)  # fmt: skip
        if magic != MEMBER_STATE_MAGIC or version != 1:
            raise BlobFormatError("not a version-1 committee member state")
        if params_digest != params.digest() or (size, threshold) != (
            committee.size,
            committee.threshold,
        ):
            raise CommitteeSetupError("committee member state of other parameters or committee")
        offset = _MEMBER_STATE_HEAD.size
        indices = [struct.unpack_from(">H", secret, offset + 2 * i)[0] for i in range(count)]
        offset += 2 * count
        public_key_share = secret[offset : offset + key_length]
        offset += key_length
        context = secret[offset : offset + context_length]
        offset += context_length
        polys = unpack_polys(secret[offset:], params, count=count)
        self = cls.__new__(cls)
        self.member, self.params, self.committee, self.policy = member, params, committee, policy
        if member not in committee.members:
            raise CommitteeSetupError(f"member must be in 1..{committee.size}, got {member}")
        self.crp_seed = seed
        self.decryptions = decryptions
        self._ring = CommitteeRing(params)
        self._q = self._ring.wire_prime
        self._noise_std = smudging_budget(
            params=params, committee=committee, policy=policy
        ).member_std
        self.public_key_share = public_key_share
        self._dealt = None
        self._checked = set()
        self.context = PublicContext.from_bytes(context) if context else None
        if joined:
            if len(indices) != 1 or self.context is None:
                raise BlobFormatError("a joined member's state holds one key share and a context")
            self._key_share, self._received = polys[0], {}
        else:
            self._key_share = None
            self._received = {j: polys[i] for i, j in enumerate(indices)}
        return self

    def deal_secret_shares(self) -> dict[int, bytes]:
        """Messages f_i(j) for every other member j (empty when T == K). Once only: secret."""
        if self._dealt is None:
            return {}
        dealt, self._dealt = self._dealt, None
        bits = self._q.bit_length()
        return {
            recipient: self._share_head(self.member, recipient) + pack_coefficients(share, bits)
            for recipient, share in dealt.items()
        }

    def _share_head(self, sender: int, recipient: int) -> bytes:
        return _SECRET_SHARE_HEAD.pack(
            SECRET_SHARE_MAGIC,
            1,
            self.params.digest(),
            self.crp_seed,
            sender,
            recipient,
            self.committee.size,
            self.committee.threshold,
        )

    def receive_secret_share(self, *, sender: int, message: bytes) -> None:
        """Store f_sender(self.member); :class:`CommitteeSetupError` if misaddressed."""
        head = self._share_head(sender, self.member)
        if self.committee.is_additive or sender == self.member:
            raise CommitteeSetupError(f"member {self.member} expects no share from {sender}")
        if sender not in self.committee.members or message[: len(head)] != head:
            raise CommitteeSetupError(
                f"share message from {sender} is not addressed to member {self.member} "
                "of this committee, parameters and seed"
            )
        if sender in self._received:
            raise CommitteeSetupError(f"member {self.member} already has a share from {sender}")
        self._received[sender] = unpack_polys(message[len(head) :], self.params, count=1)[0]

    def join(
        self, shares: Sequence[bytes], *, share_digests: Sequence[Digest] | None = None
    ) -> PublicContext:
        """Build the collective public context from all K key shares; enable decryption.

        Checks that this member's own share is among them unchanged and, when given, that
        every share matches its committed digest (:class:`CommitmentMismatchError`).
        """
        if self.public_key_share not in shares:
            raise CommitmentMismatchError(f"member {self.member}'s own key share is missing")
        expected = {self.member} if self.committee.is_additive else set(self.committee.members)
        missing = sorted(expected - set(self._received))
        if missing:
            raise CommitteeSetupError(
                f"member {self.member} lacks the secret shares of members {missing}"
            )
        self.context = collective_public_context(
            self.params,
            committee=self.committee,
            crp_seed=self.crp_seed,
            shares=shares,
            share_digests=share_digests,
        )
        self._key_share = sum_mod([self._received[j] for j in sorted(self._received)], self._q)
        self._received = {}
        return self.context

    def verify_aggregate(self, aggregate: bytes, *, committed_blobs: Sequence[bytes]) -> Digest:
        """Recombine ``committed_blobs`` itself and compare with ``aggregate``, byte for byte.

        On success the aggregate's digest is remembered as checked (and returned), which
        :meth:`partial_decrypt` requires. Raises :class:`CommitmentMismatchError` (not the
        recombination of ``committed_blobs``), :class:`NotAnAggregateError`,
        :class:`DuplicateClientError`, :class:`InsufficientClientsError` (fewer than
        ``min_clients`` inputs), :class:`CommitteeSetupError` (before :meth:`join`) and
        the blob parser's errors.
        """
        context = self._joined_context()
        header = parse_blob(aggregate, self.params, context_digest=context.digest).header
        require_releasable(header, self.policy, who="committee members")
        check_aggregate(context, aggregate, committed_blobs)
        digest = blob_digest(aggregate)
        self._checked.add(digest)
        return digest

    def partial_decrypt(
        self, aggregate: bytes, *, committed_blobs: Sequence[bytes] | None = None
    ) -> bytes:
        """This member's partial decryption of an aggregate it has verified.

        With ``committed_blobs``, runs :meth:`verify_aggregate` first; without, the
        aggregate must have been verified before, else :class:`CommitmentMismatchError`.
        """
        if committed_blobs is not None:
            self.verify_aggregate(aggregate, committed_blobs=committed_blobs)
        context = self._joined_context()
        digest = blob_digest(aggregate)
        if digest not in self._checked or self._key_share is None:
            raise CommitmentMismatchError(
                f"member {self.member} has not verified this aggregate against the committed "
                "client blobs: refusing to decrypt it"
            )
        parsed = parse_blob(aggregate, self.params, context_digest=context.digest)
        c1 = parsed.coefficients[:, 1, :]
        noise = smudging_noise(c1.shape, std=self._noise_std) * self.committee.lagrange_scale
        masked = mulmod(c1, self._key_share, self._q)
        partial = addmod(masked, self._ring.secret_to_ntt(from_signed(noise, self._q)), self._q)
        self.decryptions += 1
        return PartialDecryption(
            member=self.member,
            committee=self.committee,
            context_digest=context.digest,
            aggregate_digest=digest,
            coefficients=partial,
            bits=self._q.bit_length(),
        ).to_bytes()

    def _joined_context(self) -> PublicContext:
        if self.context is None or self._key_share is None:
            raise CommitteeSetupError(f"member {self.member} has not joined the committee")
        return self.context


@dataclass(frozen=True)
class CommitteeRelease:
    """A released sum: the rounded values and which members' partials produced it.

    ``cross_checked``: whether more than T partials were available, so that they were
    checked for consistency (see :mod:`secagg.ckks._committee`).
    """

    values: np.ndarray
    members: tuple[int, ...]
    cross_checked: bool


def combine_partials(
    aggregate: bytes,
    partials: Iterable[bytes],
    *,
    public_context: PublicContext | bytes,
    committee: CommitteeParams,
    policy: RevealPolicy,
) -> CommitteeRelease:
    """Release the sum of ``aggregate`` from at least T members' partial decryptions.

    Raises :class:`InsufficientPartialsError` with fewer than T distinct members,
    :class:`PartialMismatchError` (``culprits`` named where possible) when a partial is
    for another aggregate or context, duplicated, inconsistent with the others, or the
    result is outside the range a sum can take. Nothing is released when it raises; a
    caller (the round protocol, the auditor) records the named culprits and may call again
    without their partials, which releases if at least T consistent partials remain.
    ``policy`` must be the members' reveal policy: it fixes the smudging bound.
    """
    if isinstance(public_context, bytes | bytearray):
        public_context = PublicContext.from_bytes(bytes(public_context))
    params = public_context.params
    parsed_aggregate = parse_blob(aggregate, params, context_digest=public_context.digest)
    aggregate_digest = blob_digest(aggregate)
    chunks = parsed_aggregate.header.chunk_count
    by_member: dict[int, np.ndarray] = {}
    for data in partials:
        partial = PartialDecryption.from_bytes(data, params)
        culprit = (partial.member,)
        if partial.committee != committee:
            raise PartialMismatchError("partial made for another committee", culprits=culprit)
        if partial.context_digest != public_context.digest:
            raise PartialMismatchError("partial made under another key", culprits=culprit)
        if partial.aggregate_digest != aggregate_digest or partial.coefficients.shape[0] != chunks:
            raise PartialMismatchError("partial of another aggregate", culprits=culprit)
        if partial.member in by_member:
            raise PartialMismatchError("two partials from one member", culprits=culprit)
        by_member[partial.member] = partial.coefficients
    present = tuple(sorted(by_member))
    if len(present) < committee.threshold:
        raise InsufficientPartialsError(
            f"{len(present)} partial decryptions (members {list(present)}), need "
            f"{committee.threshold} of {committee.size}: nothing released"
        )
    ring = CommitteeRing(params)
    budget = smudging_budget(params=params, committee=committee, policy=policy)
    cross_checked = len(present) > committee.threshold
    if cross_checked:
        _cross_check(ring, committee, by_member, noise_bound=budget.member_std)
    subset = min(
        combinations(present, committee.threshold),
        key=lambda members: sum(mu * mu for mu in committee.integer_weights(members).values()),
    )
    values = recombine(
        ring, parsed_aggregate.coefficients, {j: by_member[j] for j in subset}, committee
    )[: parsed_aggregate.header.element_count]
    if not np.all(np.abs(values) <= params.max_abs_sum):
        raise PartialMismatchError(
            f"partials of members {list(subset)} decrypt outside the valid range "
            f"|sum| <= {params.max_abs_sum:g}: at least one is wrong; nothing released"
        )
    rounded = np.round(values / policy.grid) * policy.grid
    return CommitteeRelease(values=rounded, members=subset, cross_checked=cross_checked)


def recombine(
    ring: CommitteeRing,
    ciphertexts: np.ndarray,
    partials: dict[int, np.ndarray],
    committee: CommitteeParams,
) -> np.ndarray:
    """Decode c0 + sum_j lambda_j * d_j for the members in ``partials`` (no checks).

    With fewer than T members this yields values masked by c1 * (share mismatch): noise
    of the size of q / scale, not the sum (the tests check exactly that).
    """
    q = ring.wire_prime
    weights = lagrange(tuple(sorted(partials)), at=0)
    total = ciphertexts[:, 0, :].copy()
    for member, partial in sorted(partials.items()):
        if committee.is_additive:
            total = addmod(total, partial, q)
        else:
            total = addmod(total, mulmod(partial, fraction_mod(weights[member], q), q), q)
    return ring.decode(total)


def _cross_check(
    ring: CommitteeRing,
    committee: CommitteeParams,
    partials: dict[int, np.ndarray],
    *,
    noise_bound: float,
) -> None:
    """Raise :class:`PartialMismatchError` unless all partials fit one sharing polynomial."""
    q = ring.wire_prime
    scale = committee.lagrange_scale
    max_noise = math.floor(SMUDGING_TAIL_STDS * noise_bound)
    coefficient_domain = {member: ring.from_ntt(partial) for member, partial in partials.items()}

    def consistent(group: tuple[int, ...]) -> bool:
        base, others = group[: committee.threshold], group[committee.threshold :]
        for member in others:
            basis = lagrange(base, at=member)
            predicted = sum_mod(
                [mulmod(coefficient_domain[k], fraction_mod(basis[k], q), q) for k in base], q
            )
            residual = np.abs(centered(submod(coefficient_domain[member], predicted, q), q))
            bound = (scale + sum(abs(int(weight * scale)) for weight in basis.values())) * max_noise
            if int(residual.max()) > bound:
                return False
        return True

    present = tuple(sorted(partials))
    if consistent(present):
        return
    culprits: tuple[int, ...] = ()
    if len(present) >= committee.threshold + 2:
        candidates = [
            member
            for member in present
            if consistent(tuple(other for other in present if other != member))
        ]
        if len(candidates) == 1:
            culprits = (candidates[0],)
    named = f"member {culprits[0]}'s partial is wrong" if culprits else "cannot attribute"
    raise PartialMismatchError(
        f"partial decryptions of members {list(present)} are inconsistent ({named}); "
        "nothing released",
        culprits=culprits,
    )
