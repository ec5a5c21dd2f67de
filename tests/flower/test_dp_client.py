"""dp=client on the deployment: each hospital clips its update to C on its own node, the
releasing party (the key holder for CKKS, the driver for plain) adds the Gaussian noise
inside its release, the driver keeps the federation's event chain (store and manifests),
and ``results.json`` reports the runner's epsilon; ``secagg audit --results`` exits 0.
The key holder refuses a release without the run's noise, under another federation
policy, whose event chain hides an earlier release, or past the budget."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from eth_account import Account
from scipy.stats import chi2

from deploy import (
    JOIN,
    RELEASE,
    HospitalSite,
    InProcessTransport,
    KeyHolderSite,
    RoundDriver,
    WireMessage,
)
from deploy._sites import SitePolicy, SitePolicyError, compose_run_config
from dp import ClientLevelAccountant, PrivacyBudgetExceededError
from secagg import CommitmentMismatchError, ManifestClient, RoundManifest, keccak256
from tests.flower.conftest import HEART, in_process_sites, scheme_overrides
from tests.flower.test_inprocess import FreshSitePerMessage, audit_cli

pytestmark = pytest.mark.anvil

SIGMA, CLIP = 2.0, 0.001
DP_CLIENT = ("dp=client", f"dp.noise_multiplier={SIGMA}", f"dp.max_grad_norm={CLIP}")
HOSPITALS = 4


def runner_records(scheme: str, *extra: str) -> tuple[list, object]:
    """The experiments runner's round records and final record (in-process, chain=none)."""
    from experiments._runner import build_federation

    overrides = [o for o in HEART if not o.startswith(("chain=", "dp="))]
    cfg, _ = compose_run_config([*overrides, *scheme_overrides(scheme), *extra, "chain=none"])
    return build_federation(cfg).run()


class RecordingDriver(RoundDriver):
    """The round driver, keeping each round's released (noised) sum for the test."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.released: dict[int, np.ndarray] = {}

    def _release(self, round_id, manifest, session, aggregate, included, **kwargs):
        total = super()._release(round_id, manifest, session, aggregate, included, **kwargs)
        self.released[round_id] = np.array(total)
        return total


def exact_sum(driver: RoundDriver, key_holder: KeyHolderSite, round_id: int) -> np.ndarray:
    """The round's noiseless weighted sum: the published aggregate, opened by the test
    (CKKS: with the key holder's own secret key, as its release does before the noise)."""
    info = driver.ledger.round_info(round_id)
    aggregate = driver.view.store.get(info.aggregate_digest)
    if driver.cfg.secagg.name == "plain":
        return np.frombuffer(aggregate, dtype="<f8").copy()
    manifest = RoundManifest.from_bytes(driver.view.store.get(info.config_digest))
    session = key_holder.scheme.start_round(
        round_id=round_id, client_ids=[c.client_id for c in manifest.clients], dim=manifest.dim
    )
    survivors = [driver.view.client_id_of(a) for a in info.participants or ()]
    return np.asarray(session.reveal(aggregate, survivors=survivors), dtype=np.float64)


def sites_with_key_holder() -> tuple[object, KeyHolderSite]:
    transport = in_process_sites(HOSPITALS)
    key_holder = KeyHolderSite()
    transport.sites[1] = key_holder.handle
    return transport, key_holder


@pytest.mark.parametrize("scheme", ["plain", "ckks"])
def test_dp_client_accounts_as_the_runner_noises_the_release_and_audits_clean(
    heart_settings, scheme
):
    transport, key_holder = sites_with_key_holder()
    driver = RecordingDriver(heart_settings(scheme, *DP_CLIENT), transport)
    run = driver.run()
    rounds = run.results.rounds
    assert [r.n_clients for r in rounds] == [HOSPITALS, HOSPITALS]
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit

    # The federation's epsilon, every round and final, is the runner's for the same config.
    records, final_record = runner_records(scheme, *DP_CLIENT)
    per_round = [r.epsilon for r in records]
    assert all(e is not None and e > 0 for e in per_round)
    assert [r.epsilon for r in rounds] == pytest.approx(per_round, rel=1e-12)
    assert rounds[1].epsilon > rounds[0].epsilon
    assert run.results.final.epsilon == pytest.approx(final_record.epsilon, rel=1e-12)
    assert run.results.final.delta == final_record.delta
    written = json.loads(run.results_path.read_text())
    assert set(written["final"]["privacy"]) == {"federation"}
    summary = written["final"]["privacy"]["federation"]
    assert summary["rounds"] == 2 and summary["weights"] == "uniform"
    assert summary["clip_norm"] == CLIP and summary["distributed"] is False

    # Each manifest commits the federation's policy and the chain head of the releases
    # before it; every event is in the driver's store.
    events = driver.privacy.federation_events()
    assert [e.round_id for e in events] == [1, 2]
    heads = []
    for round_id in (1, 2):
        digest = driver.ledger.round_info(round_id).config_digest
        manifest = RoundManifest.from_bytes(driver.view.store.get(digest))
        assert manifest.dp_mode == "client"
        assert manifest.federation_policy == driver.privacy.federation_policy()
        assert {c.weight for c in manifest.clients} == {1.0 / HOSPITALS}
        heads.append(manifest.federation_event)
    assert heads == [None, events[0].digest().hex()]
    for event in events:
        assert driver.view.store.get(event.digest()) == event.canonical_bytes()

    # Clipped on each hospital's node: every committed plain blob is weight * (update of
    # norm exactly C); a 5-step update of this model is far longer than C = 0.001.
    if scheme == "plain":
        for round_id in (1, 2):
            for commitment in driver.ledger.commitments(round_id):
                blob = driver.view.store.get(commitment.blob_digest)
                norm = np.linalg.norm(np.frombuffer(blob, dtype="<f8"))
                assert norm == pytest.approx(CLIP / HOSPITALS, rel=1e-9)

    # The released sum is the exact sum plus N(0, (sigma C / n)^2) per coordinate.
    noise = np.concatenate([driver.released[r] - exact_sum(driver, key_holder, r) for r in (1, 2)])
    expected_std = SIGMA * CLIP / HOSPITALS
    low, high = chi2.ppf([1e-6, 1 - 1e-6], df=noise.size) / noise.size
    variance_ratio = float(np.mean(noise**2)) / expected_std**2
    assert low < variance_ratio < high, (variance_ratio, low, high)

    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "verdict: clean" in audit.stdout


# ------------------------------------------------------------------- the key holder
def joined_sites(scheme: str = "ckks") -> tuple[KeyHolderSite, HospitalSite, str]:
    overrides = "\n".join(
        (*(o for o in HEART if not o.startswith("dp=")), *DP_CLIENT, *scheme_overrides(scheme))
    )
    key_holder = KeyHolderSite()
    joined = key_holder.handle(WireMessage(JOIN, fields={"overrides": overrides}))
    hospital = HospitalSite(partition_id=0, policy=SitePolicy.permissive())
    hospital.handle(WireMessage(JOIN, fields={"overrides": overrides}))
    return key_holder, hospital, keccak256(joined.blob("public_context")).hex()


def client_level_manifest(hospital: HospitalSite, public_material: str) -> RoundManifest:
    """A round-1 manifest as an honest driver writes it (the runner's federation policy)."""
    cfg, _ = compose_run_config(hospital._overrides.splitlines())
    addresses = [str(hospital.account.address)] + [
        Account.create().address for _ in range(HOSPITALS - 1)
    ]
    return RoundManifest(
        round_id=1,
        scheme="ckks",
        scheme_config=dataclasses.asdict(cfg.secagg),
        dim=int(hospital.federation.dim),
        clients=tuple(
            ManifestClient(client_id=i, address=a, weight=1.0 / HOSPITALS)
            for i, a in enumerate(addresses)
        ),
        public_material=public_material,
        dp_mode="client",
        federation_policy=hospital.federation.privacy.federation_policy(),
    )


def test_the_key_holder_refuses_to_release_without_the_runs_noise(heart_data):
    """Checked before the key holder stores, reserves or decrypts anything (its
    ``release`` runs the same check right after the ledger's)."""
    key_holder, hospital, public_material = joined_sites()
    honest = client_level_manifest(hospital, public_material)
    # The honest manifest: the key holder's own config gives the runner's policy, and the
    # noise it adds to the weighted sum is sigma * C / n.
    accountant, std = key_holder._client_level_release(1, honest)
    assert std == pytest.approx(SIGMA * CLIP / HOSPITALS, rel=1e-12)
    assert accountant.noise_multiplier == SIGMA

    without_dp = dataclasses.replace(honest, dp_mode="off", federation_policy=None)
    with pytest.raises(SitePolicyError, match="without the run's noise"):
        key_holder._client_level_release(1, without_dp)
    policy = honest.federation_policy
    for weaker in (
        dataclasses.replace(policy, noise_multiplier=SIGMA / 10),
        dataclasses.replace(policy, max_grad_norm=CLIP * 10),
        dataclasses.replace(policy, sample_rate=0.25),
    ):
        tampered = dataclasses.replace(honest, federation_policy=weaker)
        with pytest.raises(CommitmentMismatchError, match="federation privacy policy"):
            key_holder._client_level_release(1, tampered)

    # Round 2 with a chain that accounts round 1 at three times the run's sigma (a smaller
    # epsilon, so more rounds would fit the budget): refused before the ledger is read.
    claims_more_noise = ClientLevelAccountant(
        noise_multiplier=SIGMA * 3,
        clip_norm=CLIP,
        client_sample_rate=1.0,
        delta=policy.delta,
        federation_id="federation",
    )
    event = claims_more_noise.record_round(
        round_id=1, selected=HOSPITALS, survivors=HOSPITALS, distributed=False
    )
    second = dataclasses.replace(honest, round_id=2, federation_event=event.digest().hex())
    accountant, _ = key_holder._client_level_release(2, second)
    events = json.dumps([event.canonical_bytes().decode("ascii")])
    request = WireMessage(RELEASE, fields={"federation_events": events})
    with pytest.raises(CommitmentMismatchError, match="not accounted with the run's policy"):
        key_holder._check_federation_events(2, second, accountant, request)


def test_a_hospital_refuses_a_client_level_manifest_it_would_be_misaccounted_in(heart_data):
    """Another federation policy, a non-uniform weight or a per-client policy: refused
    before training (the check runs before any ledger call)."""
    _, hospital, public_material = joined_sites()
    honest = client_level_manifest(hospital, public_material)
    member = honest.clients[0]
    hospital._check_privacy(1, member, manifest=honest)  # its own policy passes
    weaker = dataclasses.replace(
        honest,
        federation_policy=dataclasses.replace(
            honest.federation_policy, noise_multiplier=SIGMA / 10
        ),
    )
    with pytest.raises(CommitmentMismatchError, match="federation privacy policy"):
        hospital._check_privacy(1, member, manifest=weaker)
    heavier = dataclasses.replace(member, weight=0.7)
    with pytest.raises(CommitmentMismatchError, match="uniform"):
        hospital._check_privacy(1, heavier, manifest=honest)
    with pytest.raises(CommitmentMismatchError, match="dp=off"):
        hospital._check_privacy(1, member, manifest=dataclasses.replace(honest, dp_mode="off"))


def test_a_hospital_that_requires_sample_level_dp_refuses_dp_client():
    hospital = HospitalSite(partition_id=0, policy=SitePolicy(require_dp=True))
    overrides = "\n".join((*(o for o in HEART if not o.startswith("dp=")), *DP_CLIENT))
    with pytest.raises(SitePolicyError, match="sample-level DP"):
        hospital.handle(WireMessage(JOIN, fields={"overrides": overrides + "\nsecagg=masking"}))


class HidesEarlierReleases(RoundDriver):
    """A driver that leaves the federation's earlier releases out of its manifests and out
    of what it sends the key holder (its accounting would then start afresh)."""

    def _build_client_level_privacy(self) -> None:
        super()._build_client_level_privacy()
        self.privacy.federation_events = list  # always "no release yet"


class IgnoresTheBudget(RoundDriver):
    """A driver that never refuses a round for the federation's budget."""

    def _build_client_level_privacy(self) -> None:
        super()._build_client_level_privacy()
        self.privacy.admit = lambda round_id, selected: {}


def test_the_key_holder_refuses_a_chain_that_hides_a_release(heart_settings):
    transport, _ = sites_with_key_holder()
    driver = HidesEarlierReleases(heart_settings("ckks", *DP_CLIENT), transport)
    run = driver.run()
    first, second = run.results.rounds
    assert first.n_clients == HOSPITALS
    assert second.n_clients == 0  # the key holder released nothing in round 2
    assert driver.ledger.round_info(2).reveal_digest is None
    for reason in second.excluded.values():
        assert "CommitmentMismatchError" in reason and "released rounds [1]" in reason
    assert run.results.final.audit["exit_code"] != 0  # the auditor names the manifest too


def test_the_key_holder_refuses_to_release_past_the_budget(heart_settings):
    """With a budget between the first and second round's epsilon, an honest driver
    refuses round 2 before training; one that ignores the budget gets no release."""
    records, _ = runner_records("plain", *DP_CLIENT)
    budget = (records[0].epsilon + records[1].epsilon) / 2
    settings = heart_settings("ckks", *DP_CLIENT, f"dp.epsilon_budget={budget}")
    transport, _ = sites_with_key_holder()
    honest = RoundDriver(settings, transport).run()
    first, second = honest.results.rounds
    assert first.n_clients == HOSPITALS and second.n_clients == 0
    assert all("privacy budget (federation)" in r for r in second.excluded.values())
    assert second.epsilon == first.epsilon <= budget
    assert honest.results.final.audit["exit_code"] == 0

    transport, _ = sites_with_key_holder()
    driver = IgnoresTheBudget(
        dataclasses.replace(settings, output_dir=settings.output_dir.parent / "greedy"), transport
    )
    run = driver.run()
    first, second = run.results.rounds
    assert first.n_clients == HOSPITALS and second.n_clients == 0
    assert driver.ledger.round_info(2).reveal_digest is None
    assert all(PrivacyBudgetExceededError.__name__ in r for r in second.excluded.values())


def test_distributed_noise_with_masking_accounts_as_the_runner(heart_settings):
    """``dp.distributed=true``: no single party releases the masking sum, so each hospital
    adds its share N(0, sigma^2 C^2 / n) to its clipped update on its node."""
    distributed = (*DP_CLIENT, "dp.distributed=true")
    run = RoundDriver(heart_settings("masking", *distributed), in_process_sites(HOSPITALS)).run()
    assert [r.n_clients for r in run.results.rounds] == [HOSPITALS, HOSPITALS]
    records, final_record = runner_records("masking", *distributed)
    assert [r.epsilon for r in run.results.rounds] == pytest.approx(
        [r.epsilon for r in records], rel=1e-12
    )
    assert run.results.final.epsilon == pytest.approx(final_record.epsilon, rel=1e-12)
    assert run.results.final.privacy["federation"]["distributed"] is True
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_the_one_run_audit_of_client_level_dp(heart_settings):
    """``dp.audit=one_run``: the driver's canary clients enter every released mean (after
    the release's noise: the same distribution, the noise being additive and independent)
    and ``final.privacy_audit`` reports the empirical bound beside the claimed epsilon."""
    settings = heart_settings("plain", *DP_CLIENT, "dp.audit=one_run", "dp.audit_canaries=200")
    run = RoundDriver(settings, in_process_sites(HOSPITALS)).run()
    audit_entry = run.results.final.privacy_audit["federation"]
    assert audit_entry["canaries"] == 200
    assert audit_entry["epsilon_claimed"] == run.results.final.epsilon
    assert 0 <= audit_entry["correct"] <= audit_entry["guesses"] <= 200
    assert audit_entry["epsilon_lower"] >= 0
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "federation: epsilon >=" in audit.stdout


def test_dp_client_over_fresh_processes(heart_settings):
    """As on Flower 1.42 SuperNodes, every site rebuilt for each message from its own
    state: the key holder recomposes its config and re-accounts the federation's chain
    from the ledger and the driver's events, so round 2 is released (and noised) too."""
    keys = [Account.create() for _ in range(HOSPITALS)]
    key_holder = Account.create()
    sites = {
        100 + p: FreshSitePerMessage(lambda p=p: HospitalSite(partition_id=p, account=keys[p]))
        for p in range(HOSPITALS)
    }
    sites[1] = FreshSitePerMessage(lambda: KeyHolderSite(account=key_holder))
    run = RoundDriver(heart_settings("ckks", *DP_CLIENT), InProcessTransport(sites)).run()
    assert [r.n_clients for r in run.results.rounds] == [HOSPITALS, HOSPITALS]
    assert sites[1].sites_made == 3  # join and two releases, each in a fresh site
    records, _ = runner_records("ckks", *DP_CLIENT)
    assert [r.epsilon for r in run.results.rounds] == pytest.approx(
        [r.epsilon for r in records], rel=1e-12
    )
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit


@pytest.mark.slow
def test_dp_client_on_the_simulation_engine(heart_settings):
    """The same on Flower's simulation engine: the run config selects dp=client."""
    from deploy.flower_app import run_in_simulation

    run = run_in_simulation(heart_settings("ckks", *DP_CLIENT, name="flower"))
    assert run.results.meta["transport"] == "FlowerTransport"
    assert [r.n_clients for r in run.results.rounds] == [HOSPITALS, HOSPITALS]
    records, _ = runner_records("ckks", *DP_CLIENT)
    assert [r.epsilon for r in run.results.rounds] == pytest.approx(
        [r.epsilon for r in records], rel=1e-12
    )
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


class CommitsLessNoise(RoundDriver):
    """A driver whose manifests commit a tenth of the run's sigma."""

    def _manifest(self, round_id, admitted, weights, *, dim):
        manifest = super()._manifest(round_id, admitted, weights, dim=dim)
        weaker = dataclasses.replace(manifest.federation_policy, noise_multiplier=SIGMA / 10)
        return dataclasses.replace(manifest, federation_policy=weaker)


class TrustingHospital(HospitalSite):
    """A hospital that does not check the manifest's federation policy."""

    def _check_client_level(self, round_id, member, manifest) -> None:
        return None


def test_the_key_holder_refuses_a_manifest_that_commits_less_noise(heart_settings):
    """Even where every hospital trusts the driver, the key holder releases nothing whose
    committed noise is not the run's: both rounds end without a release."""
    sites = {
        100 + p: TrustingHospital(partition_id=p, policy=SitePolicy.permissive()).handle
        for p in range(HOSPITALS)
    }
    sites[1] = KeyHolderSite().handle
    driver = CommitsLessNoise(heart_settings("ckks", *DP_CLIENT), InProcessTransport(sites))
    run = driver.run()
    for record in run.results.rounds:
        assert record.n_clients == 0
        assert driver.ledger.round_info(record.round).reveal_digest is None
        for reason in record.excluded.values():
            assert "CommitmentMismatchError" in reason and "federation privacy policy" in reason
    assert driver.privacy.federation_events() == []  # nothing released, nothing accounted


@pytest.mark.parametrize(
    ("scheme", "mode"),
    [("plain", "batched"), ("ckks", "merkle")],
    ids=["plain-batched", "ckks-merkle"],
)
def test_dp_client_with_signed_commit_modes_accounts_as_the_runner(heart_settings, scheme, mode):
    """Client-level DP and the hospitals' signed commitments together: the manifests still
    commit the federation's policy and chain, the key holder still noises a merkle
    round's release (sent with its reservation), the epsilon is the runner's."""
    transport, key_holder = sites_with_key_holder()
    driver = RecordingDriver(
        heart_settings(scheme, *DP_CLIENT, f"chain.commit_mode={mode}"), transport
    )
    run = driver.run()
    assert [r.n_clients for r in run.results.rounds] == [HOSPITALS, HOSPITALS]
    assert driver.ledger.round_info(1).mode == mode
    # the released sum is noised (here too, not the exact sum of the clipped updates)
    noise = np.concatenate([driver.released[r] - exact_sum(driver, key_holder, r) for r in (1, 2)])
    low, high = chi2.ppf([1e-6, 1 - 1e-6], df=noise.size) / noise.size
    assert low < float(np.mean(noise**2)) / (SIGMA * CLIP / HOSPITALS) ** 2 < high
    records, final_record = runner_records(scheme, *DP_CLIENT)
    assert [r.epsilon for r in run.results.rounds] == pytest.approx(
        [r.epsilon for r in records], rel=1e-12
    )
    assert run.results.final.epsilon == pytest.approx(final_record.epsilon, rel=1e-12)
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
