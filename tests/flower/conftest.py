"""Fixtures of the deployment tests: an anvil node, heart-disease settings, the sites."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from torch.nn.utils import parameters_to_vector

from chain import AnvilBackend, find_anvil
from deploy import DeploymentSettings, HospitalSite, InProcessTransport, KeyHolderSite
from deploy._sites import SitePolicy
from experiments._datasets import HEART_DISEASE_HOWTO, resolve_data_dir
from experiments._errors import DatasetNotFoundError

#: Two short rounds of FLamby's heart-disease federation (4 hospitals), no DP.
HEART = (
    "dataset=heart_disease",
    "model=logreg",
    "federation=heart_disease",
    "federation.rounds=2",
    "federation.local_steps=5",
    "dp=off",
    "chain=anvil",
)
SINGLE_KEY_HOLDER = ("secagg.committee_size=1", "secagg.committee_threshold=1")


def scheme_overrides(scheme: str) -> tuple[str, ...]:
    return (f"secagg={scheme}", *(SINGLE_KEY_HOLDER if scheme == "ckks" else ()))


@pytest.fixture
def heart_data() -> None:
    try:
        resolve_data_dir(None, "heart_disease", HEART_DISEASE_HOWTO)
    except DatasetNotFoundError as error:
        pytest.skip(f"shared data not present: {error}")


@pytest.fixture
def anvil_url() -> Iterator[str]:
    """A fresh anvil node on a free loopback port, stopped after the test."""
    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil missing in CI: run `npm ci` (node_modules/.bin/anvil)")
        pytest.skip("anvil binary missing (run `npm ci`)")
    with AnvilBackend() as node:
        yield str(node.public_url)


@pytest.fixture
def heart_settings(heart_data: None, anvil_url: str, tmp_path) -> Callable[..., DeploymentSettings]:
    def _settings(scheme: str, *extra: str, name: str = "run") -> DeploymentSettings:
        return DeploymentSettings(
            overrides=(*HEART, *scheme_overrides(scheme), *extra),
            ledger_url=anvil_url,
            output_dir=tmp_path / name,
            hospitals=4,
            stage_timeout_s=60.0,
        )

    return _settings


def in_process_sites(hospitals: int) -> InProcessTransport:
    """Hospitals on nodes 100.., the key holder on node 1 (node ids are arbitrary)."""
    # one operator runs every site here: each accepts every scheme (SitePolicy.permissive)
    sites = {
        100 + p: HospitalSite(partition_id=p, policy=SitePolicy.permissive()).handle
        for p in range(hospitals)
    }
    sites[1] = KeyHolderSite().handle
    return InProcessTransport(sites)


@pytest.fixture
def run_reference(heart_data: None) -> Callable[[str], object]:
    """The experiments runner's final model (in-process, chain=none) for the same config."""

    def _run(scheme: str) -> object:
        from deploy._sites import compose_run_config
        from experiments._runner import build_federation

        overrides = [o for o in HEART if not o.startswith("chain=")]
        cfg, _ = compose_run_config([*overrides, *scheme_overrides(scheme), "chain=none"])
        federation = build_federation(cfg)
        federation.run()
        return parameters_to_vector(federation.model.parameters()).detach().cpu().numpy()

    return _run
