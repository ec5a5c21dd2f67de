"""Server strategies: how the revealed mean update moves the global model.

``federation.strategy`` selects one:

* ``fedavg``: ``w += server_lr * mean_update`` (McMahan et al., 2017; server_lr 1).
* ``fedprox``: FedAvg on the server; each client adds the proximal term
  ``proximal_mu / 2 * ||w - w_global||^2`` to its loss (Li et al., 2020).
* ``fedadam``, ``fedyogi``, ``fedadagrad``: adaptive server optimizers (Reddi et al.,
  "Adaptive Federated Optimization", ICLR 2021, Algorithm 2) that treat the mean update
  as a pseudo-gradient: ``m = b1 m + (1 - b1) d``; ``v`` by Adam, Yogi or Adagrad;
  ``w += server_lr * m / (sqrt(v) + tau)``.

Every strategy acts only on the *revealed* weighted-mean update, after secure
aggregation and after DP noise, so it composes with every secagg scheme and DP mode (for
DP it is post-processing: epsilon is unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments._config import STRATEGIES, FederationConfig
from experiments._errors import ConfigError

ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")
# server_lr when federation.server_lr is null: 1 for FedAvg/FedProx, and Reddi et al.'s
# usual starting point for the adaptive ones.
DEFAULT_SERVER_LR = {
    "fedavg": 1.0,
    "fedprox": 1.0,
    "fedadam": 0.01,
    "fedyogi": 0.01,
    "fedadagrad": 0.01,
}


@dataclass(frozen=True, kw_only=True)
class ServerOptimizerParams:
    """Parameters of the server step (see the module docstring)."""

    strategy: str = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


def server_params(config: FederationConfig) -> ServerOptimizerParams:
    """The server step a federation config selects (``server_lr`` null: the default)."""
    lr = config.server_lr
    return ServerOptimizerParams(
        strategy=config.strategy,
        server_lr=DEFAULT_SERVER_LR[config.strategy] if lr is None else float(lr),
        beta1=config.server_beta1,
        beta2=config.server_beta2,
        tau=config.server_tau,
    )


class ServerOptimizer:
    """Turns each round's revealed mean update into the step applied to the global model."""

    def __init__(self, params: ServerOptimizerParams, dim: int) -> None:
        if params.strategy not in STRATEGIES:
            raise ConfigError(
                f"federation.strategy must be one of {list(STRATEGIES)}, got {params.strategy!r}"
            )
        self.params = params
        self.m = np.zeros(dim)
        self.v = np.zeros(dim)

    def step(self, mean_update: np.ndarray) -> np.ndarray:
        """The change of the global weights for this round's mean update (float64)."""
        p = self.params
        delta = np.asarray(mean_update, dtype=np.float64)
        if p.strategy not in ADAPTIVE:
            return p.server_lr * delta
        self.m = p.beta1 * self.m + (1 - p.beta1) * delta
        squared = delta * delta
        if p.strategy == "fedadagrad":
            self.v = self.v + squared
        elif p.strategy == "fedyogi":
            self.v = self.v - (1 - p.beta2) * squared * np.sign(self.v - squared)
        else:
            self.v = p.beta2 * self.v + (1 - p.beta2) * squared
        return np.asarray(p.server_lr * self.m / (np.sqrt(self.v) + p.tau))
