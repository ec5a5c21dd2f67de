"""Server strategies: FedAvg, FedProx's proximal term on clients, and the adaptive server
optimizers (FedAdam, FedYogi, FedAdagrad) on the revealed mean update, composing with
every secagg scheme and with DP."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from torch.nn.utils import parameters_to_vector

from experiments import ServerOptimizer, ServerOptimizerParams
from experiments._config import RunConfig
from experiments._errors import ConfigError
from experiments._preflight import check_command_line
from experiments._runner import build_federation

ToRun = Callable[..., RunConfig]
TINY = ("dataset=synthetic", "dataset.n_samples=300", "chain=none", "federation.rounds=2")


def _reference(strategy: str, deltas: list[np.ndarray], lr: float) -> list[np.ndarray]:
    """Reddi et al. (2021), Algorithm 2, written out step by step."""
    b1, b2, tau = 0.9, 0.99, 1e-3
    m = np.zeros_like(deltas[0])
    v = np.zeros_like(deltas[0])
    steps = []
    for d in deltas:
        m = b1 * m + (1 - b1) * d
        if strategy == "fedadagrad":
            v = v + d**2
        elif strategy == "fedyogi":
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        else:
            v = b2 * v + (1 - b2) * d**2
        steps.append(lr * m / (np.sqrt(v) + tau))
    return steps


@pytest.mark.parametrize("strategy", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_server_steps_follow_reddi_et_al(strategy: str) -> None:
    rng = np.random.default_rng(0)
    deltas = [rng.normal(size=7) for _ in range(4)]
    optimizer = ServerOptimizer(ServerOptimizerParams(strategy=strategy, server_lr=0.1), 7)
    for got, want in zip(
        [optimizer.step(d) for d in deltas], _reference(strategy, deltas, 0.1), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_fedavg_scales_the_mean_update_by_the_server_lr() -> None:
    delta = np.arange(5.0)
    step = ServerOptimizer(ServerOptimizerParams(strategy="fedavg", server_lr=0.5), 5).step(delta)
    np.testing.assert_array_equal(step, 0.5 * delta)


def test_fedprox_keeps_client_updates_closer_to_the_global_model(run_cfg: ToRun) -> None:
    plain = ("dp=off", "secagg=plain", *TINY, "federation.local_epochs=3")
    fedavg = build_federation(run_cfg(*plain))
    fedprox = build_federation(
        run_cfg(*plain, "federation.strategy=fedprox", "federation.proximal_mu=10")
    )
    avg_update, _, _ = fedavg.train_client(0, 1)
    prox_update, _, _ = fedprox.train_client(0, 1)
    assert np.linalg.norm(prox_update) < 0.8 * np.linalg.norm(avg_update)


def _final_weights(run_cfg: ToRun, *overrides: str) -> tuple[np.ndarray, float | None]:
    federation = build_federation(run_cfg(*TINY, *overrides))
    _, final = federation.run()
    weights = parameters_to_vector(federation.model.parameters()).detach().double().numpy()
    return weights, final.epsilon


def test_fedadam_composes_with_secure_aggregation_and_dp(run_cfg: ToRun) -> None:
    adam = ("federation.strategy=fedadam", "federation.server_lr=0.05")
    start = (
        parameters_to_vector(
            build_federation(run_cfg(*TINY, "dp=off", "secagg=plain")).model.parameters()
        )
        .detach()
        .double()
        .numpy()
    )
    plain, _ = _final_weights(run_cfg, "dp=off", "secagg=plain", *adam)
    masked, _ = _final_weights(run_cfg, "dp=off", "secagg=masking", *adam)
    fedavg, _ = _final_weights(run_cfg, "dp=off", "secagg=plain")
    assert np.abs(plain - start).max() > 0.01  # the adaptive step moved the model
    np.testing.assert_allclose(masked, plain, atol=1e-4)  # masking reveals the same mean
    assert np.abs(plain - fedavg).max() > 1e-3  # and it is not FedAvg's step
    _, eps_adam = _final_weights(run_cfg, "dp=sample", "dp.target_epsilon=2", "secagg=plain", *adam)
    _, eps_avg = _final_weights(run_cfg, "dp=sample", "dp.target_epsilon=2", "secagg=plain")
    assert eps_adam == pytest.approx(eps_avg)  # post-processing: epsilon is unchanged


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dp=sample", "federation.strategy=fedprox", "federation.proximal_mu=0.1"], "dp=sample"),
        (["federation.strategy=fedprox"], "federation.proximal_mu must be > 0"),
        (["federation.proximal_mu=0.1"], "applies only to federation.strategy=fedprox"),
        (["federation.strategy=fedsgd"], "federation.strategy must be one of"),
    ],
)
def test_strategy_misconfigurations_are_refused_up_front(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_command_line(["secagg=plain", *argv])
    assert message in str(caught.value)
