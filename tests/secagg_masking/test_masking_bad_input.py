"""Bad input at every stage: each a named error; misbehaving clients excluded, sum recovered."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from secagg._errors import DuplicateClientError, EmptyAggregateError, ParameterMismatchError
from secagg.masking import (
    AdvertiseKeys,
    MaskedInput,
    MaskedInputError,
    MaskingClient,
    MaskingParams,
    MaskingScheme,
    MaskingServer,
    MessageFormatError,
    SecretExposureError,
    ShareKeys,
    SharesDelivery,
    StageError,
    UnknownClientError,
    UnmaskRequest,
    UnmaskResponse,
    plan_round,
)
from secagg.masking._messages import EncryptedShares, Header

N, DIM = 8, 12


class Round:
    """Drives server and clients through the message-level API, one stage at a time."""

    def __init__(self, params: MaskingParams | None = None) -> None:
        self.plan = plan_round(
            params or MaskingParams(graph="complete", max_dropout_fraction=0.3),
            round_id=5,
            client_ids=range(N),
            dim=DIM,
        )
        self.server = MaskingServer(self.plan)
        self.clients = {c: MaskingClient(self.plan, c) for c in range(N)}
        rng = np.random.default_rng(1)
        self.updates = {c: rng.uniform(-0.1, 0.1, DIM) for c in range(N)}

    def advertise(self) -> dict[int, bytes]:
        adverts = {c: client.advertise_keys() for c, client in self.clients.items()}
        self.server.collect(self.server.receive_advertise, adverts)
        return self.server.broadcast_keys()

    def share(self, tamper=None) -> dict[int, bytes]:
        broadcasts = self.advertise()
        uploads = {c: self.clients[c].share_keys(b) for c, b in broadcasts.items()}
        if tamper:
            uploads = tamper(uploads)
        self.server.collect(self.server.receive_share_keys, uploads)
        return self.server.deliver_shares()

    def masked(self, tamper=None, share_tamper=None) -> bytes:
        deliveries = self.share(share_tamper)
        blobs = {c: self.clients[c].masked_input(d, self.updates[c]) for c, d in deliveries.items()}
        if tamper:
            blobs = tamper(blobs)
        return self.server.receive_masked_inputs(blobs)

    def reveal(self, tamper=None, survivors=range(N)) -> np.ndarray:
        requests = self.server.unmask_requests(survivors)
        responses = {c: self.clients[c].unmask(r) for c, r in requests.items()}
        if tamper:
            responses = tamper(responses)
        self.server.collect(self.server.receive_unmask_response, responses)
        return self.server.finish()

    def expected(self) -> np.ndarray:
        return np.sum([self.updates[c] for c in self.server.included], axis=0)


def _advert(round_: Round, sender: int = 0) -> bytes:
    return AdvertiseKeys(
        Header(5, round_.plan.params_digest, sender), b"\x09" * 32, b"\x09" * 32, bytes(32)
    ).encode()


# -- malformed -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:10],
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + b"\x09" + b[5:],
        lambda b: b[:5] + b"\x63" + b[6:],
        lambda b: b + b"\x00",
        lambda b: b[:-1],
    ],
    ids=["truncated-header", "magic", "version", "kind", "trailing", "short-body"],
)
def test_malformed_messages_are_named(mutate) -> None:
    round_ = Round()
    good = round_.clients[0].advertise_keys()
    with pytest.raises(MessageFormatError):
        round_.server.receive_advertise(0, mutate(good))


def test_non_bytes_message() -> None:
    with pytest.raises(MessageFormatError, match="must be bytes"):
        Round().server.receive_advertise(0, "hello")  # type: ignore[arg-type]


def test_other_round_or_parameters() -> None:
    round_ = Round()
    other = plan_round(MaskingParams(clip_range=3.0), round_id=5, client_ids=range(N), dim=DIM)
    foreign = MaskingClient(other, 0).advertise_keys()
    with pytest.raises(ParameterMismatchError, match="other round parameters"):
        round_.server.receive_advertise(0, foreign)
    replay = plan_round(
        MaskingParams(graph="complete", max_dropout_fraction=0.3),
        round_id=6,
        client_ids=range(N),
        dim=DIM,
    )
    with pytest.raises(ParameterMismatchError, match="round 6"):
        round_.server.receive_advertise(0, MaskingClient(replay, 0).advertise_keys())


# -- out of stage, unknown, duplicate ---------------------------------------------------------
def test_out_of_stage_messages() -> None:
    round_ = Round()
    early = _advert(round_)
    round_.share()
    with pytest.raises(StageError, match="ADVERTISE_KEYS"):
        round_.server.parse_masked_input(0, early, ())
    with pytest.raises(StageError, match="advertised keys arrived in stage"):
        round_.server.receive_advertise(0, early)
    with pytest.raises(StageError, match="stage"):
        round_.clients[0].advertise_keys()
    with pytest.raises(StageError, match="shares arrived in stage"):
        round_.server.receive_share_keys(0, b"")


def test_client_stage_order_is_enforced() -> None:
    round_ = Round()
    client = round_.clients[3]
    request = UnmaskRequest(Header(5, round_.plan.params_digest, 2**64 - 1), 3, (), ())
    with pytest.raises(StageError, match="not UNMASK"):
        client.unmask(request.encode())


def test_unknown_and_spoofed_senders() -> None:
    round_ = Round()
    with pytest.raises(UnknownClientError, match="not part of round"):
        round_.server.receive_advertise(99, _advert(round_, sender=99))
    with pytest.raises(UnknownClientError, match="claims to be from 1"):
        round_.server.receive_advertise(2, round_.clients[1].advertise_keys())
    with pytest.raises(UnknownClientError):
        MaskingClient(round_.plan, 99)


def test_duplicate_messages() -> None:
    round_ = Round()
    message = round_.clients[0].advertise_keys()
    round_.server.receive_advertise(0, message)
    with pytest.raises(DuplicateClientError, match="twice"):
        round_.server.receive_advertise(0, message)


def test_bad_public_key_is_rejected_and_recorded() -> None:
    round_ = Round()
    adverts = {c: client.advertise_keys() for c, client in round_.clients.items()}
    adverts[4] = AdvertiseKeys(
        Header(5, round_.plan.params_digest, 4), bytes(32), bytes(32), bytes(32)
    ).encode()
    rejected = round_.server.collect(round_.server.receive_advertise, adverts)
    assert set(rejected) == {4} and "MessageFormatError" in rejected[4]


# -- share authentication ---------------------------------------------------------------------
def _corrupt_shares_of(sender: int, receiver: int):
    def tamper(uploads: dict[int, bytes]) -> dict[int, bytes]:
        message = ShareKeys.decode(
            uploads[sender], round_id=5, params_digest=_corrupt_shares_of.digest
        )  # type: ignore[attr-defined]
        items = tuple(
            EncryptedShares(
                i.peer, i.ephemeral_key, i.nonce, bytes([i.sealed[0] ^ 1]) + i.sealed[1:]
            )
            if i.peer == receiver
            else i
            for i in message.shares
        )
        return {**uploads, sender: ShareKeys(message.header, items).encode()}

    return tamper


def test_failed_share_authentication_excludes_the_sender() -> None:
    round_ = Round()
    _corrupt_shares_of.digest = round_.plan.params_digest  # type: ignore[attr-defined]
    round_.masked(share_tamper=_corrupt_shares_of(sender=2, receiver=5))
    assert 2 not in round_.server.included
    assert "ShareAuthenticationError" in round_.server.misbehaving[2]
    result = round_.reveal()
    assert np.max(np.abs(result - round_.expected())) < 1e-6
    assert round_.server.revealed_keys == {2}
    assert round_.server.revealed_seeds.isdisjoint(round_.server.revealed_keys)


def test_rebound_shares_fail_authentication() -> None:
    """Ciphertexts moved to another receiver or attributed to another sender are rejected."""
    round_ = Round()
    deliveries = round_.share()
    digest = round_.plan.params_digest
    to_zero = SharesDelivery.decode(deliveries[0], round_id=5, params_digest=digest)
    to_four = SharesDelivery.decode(deliveries[4], round_id=5, params_digest=digest)
    from_three_to_zero = next(item for item in to_zero.shares if item.peer == 3)
    moved = tuple(from_three_to_zero if item.peer == 3 else item for item in to_four.shares)
    round_.clients[4].masked_input(
        SharesDelivery(to_four.header, 4, moved).encode(), round_.updates[4]
    )
    assert round_.clients[4]._state.rejected == (3,)
    relabelled = tuple(
        EncryptedShares(5, item.ephemeral_key, item.nonce, item.sealed) if item.peer == 3 else item
        for item in to_zero.shares
        if item.peer != 5
    )
    round_.clients[0].masked_input(
        SharesDelivery(to_zero.header, 0, relabelled).encode(), round_.updates[0]
    )
    assert round_.clients[0]._state.rejected == (5,)
    with pytest.raises(UnknownClientError, match="reached client 1"):
        round_.clients[1].masked_input(deliveries[2], round_.updates[1])


# -- masked vectors ---------------------------------------------------------------------------
def _with_vector(
    blob: bytes, *, dtype_code: int | None = None, drop_words: int = 0, length: int | None = None
) -> bytes:
    header_size = 54
    body = bytearray(blob)
    if dtype_code is not None:
        body[header_size + 4] = dtype_code
    if length is not None:
        struct.pack_into("<I", body, header_size, length)
    return bytes(body[: len(body) - 4 * drop_words])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dtype_code": 8}, "element type"),
        ({"drop_words": 1}, "carries"),
        ({"length": DIM + 1}, "length"),
    ],
)
def test_wrong_masked_vector_is_named_and_excluded(change, match) -> None:
    round_ = Round()

    def tamper(blobs: dict[int, bytes]) -> dict[int, bytes]:
        with pytest.raises(MaskedInputError, match=match):
            MaskedInput.decode(
                _with_vector(blobs[6], **change),
                round_id=5,
                params_digest=round_.plan.params_digest,
                dim=DIM,
            )
        return {**blobs, 6: _with_vector(blobs[6], **change)}

    round_.masked(tamper=tamper)
    assert 6 not in round_.server.included
    assert "MaskedInputError" in round_.server.misbehaving[6]
    result = round_.reveal()
    assert np.max(np.abs(result - round_.expected())) < 1e-6


def test_session_excludes_bad_blob_and_records_it() -> None:
    session = MaskingScheme(MaskingParams(graph="complete", max_dropout_fraction=0.3)).start_round(
        round_id=2, client_ids=range(N), dim=DIM
    )
    session.setup()
    updates = {c: np.full(DIM, 0.01 * c) for c in range(N)}
    blobs = {c: session.protect(c, updates[c]) for c in range(N)}
    blobs[3] = blobs[3][:-4]
    blobs[4] = blobs[5]  # a replayed blob under another id
    result = session.reveal(session.combine(blobs), survivors=range(N))
    assert set(session.excluded) == {3, 4}
    assert "MaskedInputError" in session.excluded[3]
    assert "UnknownClientError" in session.excluded[4]
    expected = sum(updates[c] for c in session.included)
    assert np.allclose(result, expected, atol=1e-6)
    with pytest.raises(EmptyAggregateError):
        session.combine({})


def test_protect_rejects_bad_updates() -> None:
    from secagg._errors import InvalidUpdateError

    session = MaskingScheme(MaskingParams()).start_round(round_id=2, client_ids=range(4), dim=3)
    session.setup()
    for update in (np.zeros(4), np.zeros((3, 1)), np.array([1, 2, 3]), np.array([0, np.nan, 0])):
        with pytest.raises(InvalidUpdateError):
            session.protect(0, update)
    with pytest.raises(UnknownClientError):
        session.protect(42, np.zeros(3))


# -- unmask stage -----------------------------------------------------------------------------
def test_client_refuses_to_reveal_both_secrets() -> None:
    round_ = Round()
    round_.masked()
    header = Header(5, round_.plan.params_digest, 2**64 - 1)
    both = UnmaskRequest(header, 0, (1, 2), (2,)).encode()
    with pytest.raises(SecretExposureError, match=r"both secrets of \[2\]"):
        round_.clients[0].unmask(both)
    stranger = UnmaskRequest(header, 0, (0,), ()).encode()
    with pytest.raises(UnknownClientError, match="holds no accepted shares"):
        round_.clients[0].unmask(stranger)
    fine = UnmaskRequest(header, 0, (1,), ()).encode()
    round_.clients[0].unmask(fine)
    with pytest.raises(StageError):
        round_.clients[0].unmask(fine)  # answers once per round


@pytest.mark.parametrize("cheater", [0, 3])
def test_bad_share_from_a_survivor_is_caught_and_sum_still_recovered(cheater: int) -> None:
    round_ = Round()
    round_.masked()

    def tamper(responses: dict[int, bytes]) -> dict[int, bytes]:
        message = UnmaskResponse.decode(
            responses[cheater], round_id=5, params_digest=round_.plan.params_digest
        )
        owner, share = message.seed_shares[0]
        forged = (int.from_bytes(share, "big") + 1).to_bytes(66, "big")
        changed = ((owner, forged), *message.seed_shares[1:])
        return {
            **responses,
            cheater: UnmaskResponse(message.header, changed, message.key_shares).encode(),
        }

    result = round_.reveal(tamper=tamper)
    assert np.max(np.abs(result - round_.expected())) < 1e-6
    assert "bad share" in round_.server.misbehaving[cheater]


def test_response_for_other_peers_is_rejected() -> None:
    round_ = Round()
    round_.masked()
    requests = round_.server.unmask_requests(range(N))
    response = round_.clients[0].unmask(requests[0])
    with pytest.raises(UnknownClientError, match="claims to be from 0"):
        round_.server.receive_unmask_response(1, response)
    wrong = UnmaskResponse(Header(5, round_.plan.params_digest, 1), (), ()).encode()
    with pytest.raises(UnknownClientError, match="answered for other peers"):
        round_.server.receive_unmask_response(1, wrong)
    round_.server.receive_unmask_response(0, response)
    with pytest.raises(DuplicateClientError):
        round_.server.receive_unmask_response(0, response)
    with pytest.raises(StageError, match="already sent"):
        round_.server.unmask_requests(range(N))


def test_client_sharing_with_too_few_neighbours_is_excluded_not_fatal() -> None:
    round_ = Round()

    def tamper(uploads: dict[int, bytes]) -> dict[int, bytes]:
        message = ShareKeys.decode(uploads[7], round_id=5, params_digest=round_.plan.params_digest)
        short = ShareKeys(message.header, message.shares[:2]).encode()
        return {**uploads, 7: short}

    deliveries = round_.share(tamper)
    assert 7 not in deliveries
    assert "below t=" in round_.server.misbehaving[7]


def test_session_setup_rejects_unknown_dropouts_and_reruns() -> None:
    session = MaskingScheme(MaskingParams()).start_round(round_id=2, client_ids=range(5), dim=3)
    with pytest.raises(UnknownClientError, match="dropouts"):
        session.setup(dropouts=[9])
    session.setup()
    with pytest.raises(StageError, match="already ran"):
        session.setup()
