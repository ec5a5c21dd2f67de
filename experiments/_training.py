"""Local training of one client, and evaluation of a model on a test set.

:class:`LocalTrainer` is the strategy the federation calls for each selected client; the
plain :class:`SGDTrainer` runs non-private SGD or Adam. A DP trainer (Opacus) replaces it
by implementing the same protocol, without touching the round loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dp import augment_views
from experiments._config import FederationConfig


@dataclass(frozen=True)
class LocalResult:
    """What local training reports besides the trained weights."""

    steps: int
    mean_loss: float
    info: dict[str, Any]


class LocalTrainer(Protocol):
    """Trains ``model`` in place on one client's data for one round."""

    def train(
        self,
        model: nn.Module,
        data: TensorDataset,
        *,
        client_id: int,
        round_id: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> LocalResult:
        """Train in place; ``generator`` is the only source of batch-order randomness."""
        ...


def round_lr(config: FederationConfig, round_id: int) -> float:
    """The clients' learning rate in round ``round_id`` (1-based) under ``lr_schedule``.

    ``cosine``: ``lr * (1 + cos(pi * (round_id - 1) / rounds)) / 2``, from ``lr`` in round 1
    to a small positive rate in the last round.
    """
    if config.lr_schedule == "cosine":
        progress = min(max(round_id - 1, 0), config.rounds) / config.rounds
        return config.lr * (1 + math.cos(math.pi * progress)) / 2
    return config.lr


def make_optimizer(name: str, parameters: Any, *, lr: float) -> torch.optim.Optimizer:
    """The optimiser a ``federation.optimizer`` value names."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    raise ValueError(f"federation.optimizer must be 'sgd' or 'adam', got {name!r}")


class SGDTrainer:
    """Plain (non-private) local training: ``local_steps`` mini-batch steps if set,
    else ``local_epochs`` shuffled passes. A fresh optimiser is made every round. With
    ``augmult = K >= 1`` each batch is replaced by K random crop-and-flip views of each of
    its images (:func:`dp.augment_views`, drawn from ``generator``). The cross-entropy
    uses ``label_smoothing`` (0: none). With
    ``proximal_mu > 0`` (FedProx) the loss adds ``mu / 2 * ||w - w_global||^2``, where
    ``w_global`` are the weights the client received this round."""

    def __init__(self, config: FederationConfig) -> None:
        self.config = config

    def train(
        self,
        model: nn.Module,
        data: TensorDataset,
        *,
        client_id: int,
        round_id: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> LocalResult:
        config = self.config
        loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=generator)
        optimizer = make_optimizer(
            config.optimizer, model.parameters(), lr=round_lr(config, round_id)
        )
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        model.train()
        total_loss, steps = 0.0, 0
        max_steps = config.local_steps or config.local_epochs * len(loader)
        mu = config.proximal_mu  # FedProx: pull towards the round's global weights
        anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else []
        while steps < max_steps:
            for features, labels in loader:
                if config.augmult:
                    features = augment_views(features, views=config.augmult, generator=generator)
                    labels = labels.repeat_interleave(config.augmult)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(features.to(device)), labels.to(device))
                if anchor:
                    distance = sum(
                        ((p - a) ** 2).sum()
                        for p, a in zip(model.parameters(), anchor, strict=True)
                    )
                    loss = loss + mu / 2 * distance
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach())
                steps += 1
                if steps >= max_steps:
                    break
        return LocalResult(steps=steps, mean_loss=total_loss / max(steps, 1), info={})


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a model on one test set. ``auc`` is None when it is undefined
    (a single class present in the labels)."""

    accuracy: float
    auc: float | None
    loss: float
    n_samples: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorDataset,
    *,
    device: torch.device,
    batch_size: int = 1024,
    flip_tta: bool = False,
) -> Evaluation:
    """Accuracy, ROC AUC (binary: P(class 1); multiclass: one-vs-rest) and mean
    cross-entropy of ``model`` on ``data``. With ``flip_tta`` the predicted class
    probabilities are the mean over each image and its horizontal flip (last axis)."""
    model.eval()
    log_prob_parts = []
    labels_parts = []
    for features, labels in DataLoader(data, batch_size=batch_size, shuffle=False):
        inputs = features.to(device)
        log_probs = torch.log_softmax(model(inputs).float(), dim=1)
        if flip_tta:
            flipped = torch.log_softmax(model(torch.flip(inputs, dims=(-1,))).float(), dim=1)
            log_probs = torch.logsumexp(torch.stack((log_probs, flipped)), dim=0) - math.log(2)
        log_prob_parts.append(log_probs.cpu())
        labels_parts.append(labels)
    log_probs = torch.cat(log_prob_parts)
    labels = torch.cat(labels_parts)
    loss = float(nn.functional.nll_loss(log_probs, labels))
    probabilities = log_probs.exp().double().numpy()
    truth = labels.numpy()
    accuracy = float((log_probs.argmax(dim=1) == labels).double().mean())
    auc: float | None = None
    present = np.unique(truth)
    if len(present) > 1:
        if probabilities.shape[1] == 2:
            auc = float(roc_auc_score(truth, probabilities[:, 1]))
        elif len(present) == probabilities.shape[1]:
            auc = float(roc_auc_score(truth, probabilities, multi_class="ovr"))
    return Evaluation(accuracy=accuracy, auc=auc, loss=loss, n_samples=len(truth))
