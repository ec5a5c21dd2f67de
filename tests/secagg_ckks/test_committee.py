"""Committee decryption on real SEAL ciphertexts: any T of K members release the sum.

Clients encrypt with the unchanged :class:`CKKSClient` under the collective key built
from the members' public key shares; the aggregate is combined by the real aggregator.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
from omegaconf import OmegaConf

from secagg._errors import (
    CommitmentMismatchError,
    InsufficientClientsError,
    ParameterMismatchError,
    SecAggError,
)
from secagg.ckks import (
    MAX_COMMITTEE_SIZE,
    CKKSAggregator,
    CKKSClient,
    CKKSSchema,
    CommitteeConfigError,
    CommitteeMember,
    CommitteeParams,
    CommitteeSetupError,
    InsufficientPartialsError,
    NotAnAggregateError,
    PartialDecryption,
    PartialMismatchError,
    PublicContext,
    PublicKeyShare,
    RevealPolicy,
    aggregation_params,
    build_ckks_scheme,
    check_aggregate,
    combine_partials,
    committee_from_schema,
    compat_params,
    parse_blob,
    smudging_budget,
    verify_public_context,
)
from secagg.ckks._committee import recombine
from secagg.ckks._seal import CommitteeRing
from secagg.ckks._zq import fraction_mod, lagrange, mulmod, shamir_shares, smudging_noise, sum_mod

PARAMS = aggregation_params()
POLICY = RevealPolicy(min_clients=2)
CLIENTS = 100
ELEMENTS = 3000  # two ciphertexts per client


@dataclass(frozen=True)
class Committee:
    committee: CommitteeParams
    members: tuple[CommitteeMember, ...]
    crp_seed: bytes
    shares: tuple[bytes, ...]
    context: PublicContext
    blobs: tuple[bytes, ...]
    exact: np.ndarray
    aggregate: bytes
    partials: dict[int, bytes]


def _form(size: int, threshold: int, *, crp_seed: bytes | None = None) -> Committee:
    committee = CommitteeParams(size=size, threshold=threshold)
    crp_seed = crp_seed or os.urandom(32)
    members = tuple(
        CommitteeMember(
            member=index, params=PARAMS, committee=committee, policy=POLICY, crp_seed=crp_seed
        )
        for index in committee.members
    )
    for dealer in members:
        for recipient, message in dealer.deal_secret_shares().items():
            members[recipient - 1].receive_secret_share(sender=dealer.member, message=message)
    shares = tuple(member.public_key_share for member in members)
    contexts = [member.join(shares) for member in members]
    return Committee(committee, members, crp_seed, shares, contexts[0], (), np.zeros(0), b"", {})


@functools.cache
def committee_with_round(size: int, threshold: int) -> Committee:
    """A committee, 100 clients' blobs under its key, the aggregate and every partial."""
    formed = _form(size, threshold)
    client = CKKSClient(formed.context.to_bytes())
    rng = np.random.default_rng(size * 10 + threshold)
    updates = rng.uniform(-1.0, 1.0, size=(CLIENTS, ELEMENTS))
    blobs = tuple(client.protect(update) for update in updates)
    aggregator = CKKSAggregator(formed.context, element_count=ELEMENTS)
    for blob in blobs:
        aggregator.add(blob)
    aggregate = aggregator.aggregate()
    partials = {
        member.member: member.partial_decrypt(aggregate, committed_blobs=blobs)
        for member in formed.members
    }
    return Committee(
        formed.committee,
        formed.members,
        formed.crp_seed,
        formed.shares,
        formed.context,
        blobs,
        updates.sum(axis=0),
        aggregate,
        partials,
    )


def _combine(round_: Committee, members: tuple[int, ...]) -> np.ndarray:
    release = combine_partials(
        round_.aggregate,
        [round_.partials[member] for member in members],
        public_context=round_.context,
        committee=round_.committee,
        policy=POLICY,
    )
    return release.values


def _raw_recombination(round_: Committee, members: tuple[int, ...]) -> np.ndarray:
    """c0 + sum of lambda_j * partial_j over ``members`` (Lagrange over exactly them)."""
    ring = CommitteeRing(PARAMS)
    partials = {
        member: PartialDecryption.from_bytes(round_.partials[member], PARAMS).coefficients
        for member in members
    }
    ciphertexts = parse_blob(
        round_.aggregate, PARAMS, context_digest=round_.context.digest
    ).coefficients
    return recombine(ring, ciphertexts, partials, round_.committee)[:ELEMENTS]


def test_mulmod_is_exact_against_python_integers() -> None:
    q = CommitteeRing(PARAMS).wire_prime
    rng = np.random.default_rng(1)
    x = rng.integers(0, q, size=4000, dtype=np.uint64)
    y = rng.integers(0, q, size=4000, dtype=np.uint64)
    x[:4] = [0, 1, q - 1, q - 1]
    y[:4] = [q - 1, q - 1, q - 1, 1]
    expected = [int(a) * int(b) % q for a, b in zip(x, y, strict=True)]
    assert mulmod(x, y, q).tolist() == expected


def test_shamir_any_threshold_shares_reconstruct_and_fewer_do_not() -> None:
    q = CommitteeRing(PARAMS).wire_prime
    secret = np.random.default_rng(2).integers(0, q, size=64, dtype=np.uint64)
    shares = shamir_shares(secret, threshold=3, points=(1, 2, 3, 4, 5), q=q)
    for subset in combinations(shares, 3):
        weights = lagrange(subset, at=0)
        rebuilt = sum_mod([mulmod(shares[j], fraction_mod(weights[j], q), q) for j in subset], q)
        assert np.array_equal(rebuilt, secret)
    weights = lagrange((1, 2), at=0)
    rebuilt = sum_mod([mulmod(shares[j], fraction_mod(weights[j], q), q) for j in (1, 2)], q)
    assert not np.array_equal(rebuilt, secret)


def test_collective_key_is_what_clients_use_and_matches_the_committed_shares(
    client: CKKSClient,
) -> None:
    formed = _form(3, 2)
    update = np.random.default_rng(4).uniform(-1.0, 1.0, size=ELEMENTS)
    committee_blob = CKKSClient(formed.context.to_bytes()).protect(update)
    assert len(committee_blob) == len(client.protect(update))  # same ciphertexts on the wire
    digests = [PublicKeyShare.from_bytes(share, PARAMS).digest for share in formed.shares]
    context = verify_public_context(
        formed.context.to_bytes(),
        committee=formed.committee,
        crp_seed=formed.crp_seed,
        shares=list(reversed(formed.shares)),
        share_digests=digests,
    )
    assert context.digest == formed.context.digest
    assert all(member.context == formed.context for member in formed.members)
    with pytest.raises(ParameterMismatchError):  # the shares were made for another seed
        verify_public_context(
            formed.context,
            committee=formed.committee,
            crp_seed=os.urandom(32),
            shares=formed.shares,
        )
    other = _form(3, 2, crp_seed=formed.crp_seed)
    with pytest.raises(CommitmentMismatchError):  # a share swapped for another member's
        verify_public_context(
            formed.context,
            committee=formed.committee,
            crp_seed=formed.crp_seed,
            shares=(other.shares[0], *formed.shares[1:]),
            share_digests=digests,
        )
    with pytest.raises(CommitmentMismatchError):  # same shares, other context
        verify_public_context(
            other.context,
            committee=formed.committee,
            crp_seed=formed.crp_seed,
            shares=formed.shares,
        )
    with pytest.raises(ParameterMismatchError):
        verify_public_context(
            formed.context,
            committee=formed.committee,
            crp_seed=formed.crp_seed,
            shares=formed.shares[:2],
        )


@pytest.mark.parametrize(("size", "threshold"), [(3, 3), (3, 2), (5, 3)])
def test_any_threshold_of_the_members_release_the_sum(size: int, threshold: int) -> None:
    round_ = committee_with_round(size, threshold)
    for subset in combinations(round_.committee.members, threshold):
        released = _combine(round_, subset)
        assert released.shape == (ELEMENTS,)
        assert np.max(np.abs(released - round_.exact)) <= 1e-6


def test_all_members_cross_check_and_release() -> None:
    round_ = committee_with_round(5, 3)
    release = combine_partials(
        round_.aggregate,
        list(round_.partials.values()),
        public_context=round_.context,
        committee=round_.committee,
        policy=POLICY,
    )
    assert release.cross_checked
    assert len(release.members) == 3
    assert np.max(np.abs(release.values - round_.exact)) <= 1e-6


@pytest.mark.parametrize(("size", "threshold"), [(3, 3), (3, 2), (5, 3)])
def test_fewer_than_threshold_partials_give_noise_and_are_refused(
    size: int, threshold: int
) -> None:
    round_ = committee_with_round(size, threshold)
    for subset in combinations(round_.committee.members, threshold - 1):
        garbage = _raw_recombination(round_, subset)
        assert np.median(np.abs(garbage - round_.exact)) > 1.0
        with pytest.raises(InsufficientPartialsError):
            _combine(round_, subset)


def test_one_members_share_alone_decrypts_nothing() -> None:
    for size, threshold in [(3, 3), (3, 2)]:
        round_ = committee_with_round(size, threshold)
        for member in round_.committee.members:
            alone = _raw_recombination(round_, (member,))
            assert np.median(np.abs(alone - round_.exact)) > 1.0


def test_absent_members_up_to_k_minus_t_and_one_more() -> None:
    round_ = committee_with_round(5, 3)
    present = (2, 4, 5)  # members 1 and 3 (K - T = 2) absent
    assert np.max(np.abs(_combine(round_, present) - round_.exact)) <= 1e-6
    with pytest.raises(InsufficientPartialsError):
        _combine(round_, (2, 5))


def _tampered(partial: bytes, *, offset: int) -> bytes:
    parsed = PartialDecryption.from_bytes(partial, PARAMS)
    q = CommitteeRing(PARAMS).wire_prime
    coefficients = parsed.coefficients.copy()
    coefficients[0, 100] = (int(coefficients[0, 100]) + offset) % q
    return PartialDecryption(
        member=parsed.member,
        committee=parsed.committee,
        context_digest=parsed.context_digest,
        aggregate_digest=parsed.aggregate_digest,
        coefficients=coefficients,
        bits=parsed.bits,
    ).to_bytes()


def test_a_wrong_partial_is_named_and_the_others_still_release() -> None:
    round_ = committee_with_round(5, 3)
    partials = dict(round_.partials)
    partials[4] = _tampered(partials[4], offset=1 << 40)
    with pytest.raises(PartialMismatchError) as caught:
        combine_partials(
            round_.aggregate,
            list(partials.values()),
            public_context=round_.context,
            committee=round_.committee,
            policy=POLICY,
        )
    assert caught.value.culprits == (4,)
    honest = [partials[member] for member in (1, 2, 3, 5)]
    release = combine_partials(
        round_.aggregate,
        honest,
        public_context=round_.context,
        committee=round_.committee,
        policy=POLICY,
    )
    assert 4 not in release.members
    assert np.max(np.abs(release.values - round_.exact)) <= 1e-6


def test_a_wrong_partial_with_one_spare_member_is_detected_not_released() -> None:
    round_ = committee_with_round(3, 2)
    partials = dict(round_.partials)
    partials[2] = _tampered(partials[2], offset=12345)
    with pytest.raises(PartialMismatchError) as caught:
        combine_partials(
            round_.aggregate,
            list(partials.values()),
            public_context=round_.context,
            committee=round_.committee,
            policy=POLICY,
        )
    assert caught.value.culprits == ()


def test_a_wrong_partial_without_redundancy_is_refused_when_out_of_range() -> None:
    round_ = committee_with_round(3, 3)
    partials = dict(round_.partials)
    partials[1] = _tampered(partials[1], offset=1 << 50)
    with pytest.raises(PartialMismatchError):
        combine_partials(
            round_.aggregate,
            list(partials.values()),
            public_context=round_.context,
            committee=round_.committee,
            policy=POLICY,
        )


def test_partials_of_another_aggregate_or_duplicated_are_named() -> None:
    round_ = committee_with_round(3, 2)
    other_aggregate = CKKSAggregator(round_.context, element_count=ELEMENTS)
    for blob in round_.blobs[:50]:
        other_aggregate.add(blob)
    foreign = round_.members[0].partial_decrypt(
        other_aggregate.aggregate(), committed_blobs=round_.blobs[:50]
    )
    for bad in ([foreign, round_.partials[2]], [round_.partials[2], round_.partials[2]]):
        with pytest.raises(PartialMismatchError) as caught:
            combine_partials(
                round_.aggregate,
                bad,
                public_context=round_.context,
                committee=round_.committee,
                policy=POLICY,
            )
        assert caught.value.culprits in ((1,), (2,))


def test_member_refuses_an_aggregate_that_is_not_the_committed_recombination() -> None:
    round_ = committee_with_round(3, 2)
    member = round_.members[0]
    reordered = list(round_.blobs)
    reordered[0], reordered[1] = reordered[1], reordered[0]
    with pytest.raises(CommitmentMismatchError):
        member.partial_decrypt(round_.aggregate, committed_blobs=reordered)
    with pytest.raises(CommitmentMismatchError):
        member.partial_decrypt(round_.aggregate, committed_blobs=round_.blobs[:-1])
    with pytest.raises(CommitmentMismatchError):
        check_aggregate(round_.context, round_.aggregate, [])
    with pytest.raises(NotAnAggregateError):
        member.partial_decrypt(round_.blobs[0], committed_blobs=round_.blobs[:1])
    single = CKKSAggregator(round_.context, element_count=ELEMENTS)
    single.add(round_.blobs[0])
    with pytest.raises(InsufficientClientsError):
        member.partial_decrypt(single.aggregate(), committed_blobs=round_.blobs[:1])
    check_aggregate(round_.context, round_.aggregate, round_.blobs)
    fresh = CKKSAggregator(round_.context, element_count=ELEMENTS)
    for blob in round_.blobs[:10]:
        fresh.add(blob)
    with pytest.raises(CommitmentMismatchError):  # never verified by this member
        member.partial_decrypt(fresh.aggregate())
    assert member.verify_aggregate(fresh.aggregate(), committed_blobs=round_.blobs[:10])
    assert PartialDecryption.from_bytes(member.partial_decrypt(fresh.aggregate()), PARAMS)


def test_key_setup_errors_are_named() -> None:
    committee = CommitteeParams(size=3, threshold=2)
    seed = os.urandom(32)
    members = [
        CommitteeMember(member=i, params=PARAMS, committee=committee, policy=POLICY, crp_seed=seed)
        for i in committee.members
    ]
    shares = [member.public_key_share for member in members]
    with pytest.raises(CommitteeSetupError):  # no secret shares received yet
        members[0].join(shares)
    with pytest.raises(CommitteeSetupError):
        members[0].partial_decrypt(b"", committed_blobs=[])
    messages = members[1].deal_secret_shares()
    assert members[1].deal_secret_shares() == {}  # dealt once only
    with pytest.raises(CommitteeSetupError):  # addressed to member 3
        members[0].receive_secret_share(sender=2, message=messages[3])
    with pytest.raises(CommitteeSetupError):
        CommitteeMember(member=4, params=PARAMS, committee=committee, policy=POLICY, crp_seed=seed)
    with pytest.raises(ParameterMismatchError):
        CommitteeMember(
            member=1, params=compat_params(), committee=committee, policy=POLICY, crp_seed=seed
        )


def test_public_key_share_round_trips_and_rejects_other_parameters() -> None:
    formed = _form(3, 3)
    share = PublicKeyShare.from_bytes(formed.shares[0], PARAMS)
    assert share.to_bytes() == formed.shares[0]
    with pytest.raises(ParameterMismatchError):
        PublicKeyShare.from_bytes(formed.shares[0], compat_params())
    with pytest.raises(SecAggError):
        PublicKeyShare.from_bytes(formed.shares[0][:-1], PARAMS)


@pytest.mark.parametrize(
    ("size", "threshold"), [(0, 1), (3, 4), (3, 0), (MAX_COMMITTEE_SIZE + 1, 1)]
)
def test_committee_parameters_are_validated(size: int, threshold: int) -> None:
    with pytest.raises(CommitteeConfigError):
        CommitteeParams(size=size, threshold=threshold)


def test_schema_committee_fields() -> None:
    schema = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(CKKSSchema),
            OmegaConf.from_dotlist(["committee_size=3", "committee_threshold=2"]),
        )
    )
    assert committee_from_schema(schema) == CommitteeParams(size=3, threshold=2)
    assert committee_from_schema(CKKSSchema()) == CommitteeParams(size=1, threshold=1)
    build_ckks_scheme(CKKSSchema())
    with pytest.raises(CommitteeConfigError):
        committee_from_schema(CKKSSchema(committee_size=2, committee_threshold=3))
    with pytest.raises(CommitteeConfigError):
        committee_from_schema(CKKSSchema(preset="compat", committee_size=3, committee_threshold=2))
    scheme = build_ckks_scheme(schema)  # no key holder: the committee's key comes later
    assert scheme.committee == CommitteeParams(size=3, threshold=2)
    assert scheme.key_holder is None and scheme.public_context is None


def test_smudging_noise_has_its_std_and_a_hard_bound() -> None:
    noise = smudging_noise((200_000,), std=1000.0)
    assert noise.dtype == np.int64
    assert abs(float(noise.std()) / 1000.0 - 1.0) < 0.02
    assert abs(float(noise.mean())) < 10.0
    assert int(np.abs(noise).max()) <= 9000


@pytest.mark.parametrize(("size", "threshold"), [(1, 1), (3, 3), (3, 2), (5, 4), (8, 5)])
def test_every_release_is_flooded_at_most_like_a_single_key_holder(
    size: int, threshold: int
) -> None:
    committee = CommitteeParams(size=size, threshold=threshold)
    budget = smudging_budget(params=PARAMS, committee=committee, policy=POLICY)
    to_values = np.sqrt(PARAMS.poly_modulus_degree / 2) / PARAMS.scale
    for subset in committee.decrypting_subsets():
        mus = committee.integer_weights(subset)
        assert sum(abs(mu) for mu in mus.values()) > 0
        release = budget.member_std * np.sqrt(sum(mu * mu for mu in mus.values())) * to_values
        assert release <= POLICY.flood_std * (1 + 1e-12)
        assert budget.honest_member_std <= release


def test_secret_transforms_match_seals_ntt() -> None:
    ring = CommitteeRing(PARAMS)
    q = ring.wire_prime
    polys = np.random.default_rng(3).integers(0, q, size=(19, PARAMS.poly_modulus_degree))
    polys = polys.astype(np.uint64)
    expected = ring.to_ntt(polys)
    assert np.array_equal(ring.secret_to_ntt(polys), expected)
    assert np.array_equal(ring.numpy_ntt().forward(polys), expected)
    assert np.array_equal(ring.from_ntt(expected), polys)


def test_a_ledgerless_scheme_simulates_its_committee_in_process() -> None:
    scheme = build_ckks_scheme(CKKSSchema(committee_size=3, committee_threshold=2))
    updates = np.random.default_rng(3).uniform(-0.1, 0.1, size=(3, 50))
    session = scheme.start_round(round_id=1, client_ids=[0, 1, 2], dim=50)
    session.setup()
    blobs = {c: session.protect(c, updates[c]) for c in range(3)}
    aggregate = session.combine(blobs)
    total = session.reveal(aggregate, survivors=[0, 1, 2])
    np.testing.assert_allclose(total, updates.sum(axis=0), atol=1e-6)
    assert scheme.key_holder is None
    assert [member.decryptions for member in scheme.local_members] == [1, 1, 1]
    forged = session.combine({0: blobs[0], 1: blobs[1]})
    session.combine(blobs)  # the round's combined blobs are all three again
    with pytest.raises(CommitmentMismatchError):
        session.reveal(forged, survivors=[0, 1, 2])
