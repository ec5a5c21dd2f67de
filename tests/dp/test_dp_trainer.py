"""Real Opacus DP-SGD of one client: learning, accounting across rounds, refusals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dp import (
    DPConfig,
    InvalidDPConfigError,
    NonFiniteLossError,
    PrivacyBudgetExceededError,
    SampleLevelDPClient,
    UnsupportedModelError,
    epsilon_for,
    prepare_model,
    recompute_epsilon,
)

MLPFactory = Callable[..., nn.Module]


def _client(config: DPConfig, n: int, **kwargs: object) -> SampleLevelDPClient:
    args: dict[str, object] = dict(
        client_id="client-0",
        config=config,
        n_records=n,
        batch_size=64,
        planned_rounds=3,
        steps_per_round=10,
    )
    args.update(kwargs)
    return SampleLevelDPClient(**args)  # type: ignore[arg-type]


def _load(model: nn.Module, parameters: object) -> None:
    vector = torch.tensor(parameters, dtype=torch.float32)
    torch.nn.utils.vector_to_parameters(vector, model.parameters())


def test_private_training_learns_within_target_epsilon(
    breast_cancer: tuple[TensorDataset, TensorDataset],
    make_mlp: MLPFactory,
    accuracy: Callable[[nn.Module, TensorDataset], float],
) -> None:
    train, test = breast_cancer
    config = DPConfig(target_epsilon=2.0, delta=1e-5, max_grad_norm=1.0)
    client = _client(config, len(train), planned_rounds=3, steps_per_round=25)
    model = make_mlp()
    generator = torch.Generator().manual_seed(0)
    epsilons = []
    for round_id in range(3):
        result = client.train_round(
            model=model,
            dataset=train,
            round_id=round_id,
            local_steps=25,
            lr=0.5,
            generator=generator,
        )
        _load(model, result.parameters)
        assert result.steps == 25 and result.event.steps == 25
        epsilons.append(client.epsilon)
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 3
    assert 1.9 < client.epsilon <= 2.0
    assert client.total_steps == 75
    assert recompute_epsilon(client.events) == client.epsilon
    assert accuracy(model, test) >= 0.88


def test_rounds_through_the_client_compose_like_one_run(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory
) -> None:
    train, _ = breast_cancer
    config = DPConfig(noise_multiplier=1.1, delta=1e-5)
    client = _client(config, len(train), steps_per_round=4)
    model = make_mlp()
    result = client.train_round(model=model, dataset=train, round_id=0, local_steps=4, lr=0.1)
    saved = client.state_dict()

    resumed = _client(config, len(train), steps_per_round=4)
    resumed.load_state_dict(saved)
    assert resumed.epsilon == client.epsilon
    for round_id in (1, 2):
        result = resumed.train_round(
            model=model, dataset=train, round_id=round_id, local_steps=4, lr=0.1
        )
    one_run = epsilon_for(
        mechanism="dpsgd-sample",
        sample_rate=64 / len(train),
        noise_multiplier=1.1,
        steps=12,
        delta=1e-5,
        accountant="rdp",
    )
    assert resumed.epsilon == one_run
    assert result.event.cumulative_steps == 12
    assert resumed.projected_epsilon(0) == one_run
    assert recompute_epsilon(resumed.events) == one_run


def test_exhausted_budget_refuses_before_training(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory
) -> None:
    train, _ = breast_cancer
    config = DPConfig(noise_multiplier=1.0, epsilon_budget=4.0)
    client = _client(config, len(train))
    model = make_mlp()
    client.train_round(model=model, dataset=train, round_id=0, local_steps=5, lr=0.1)
    before = client.state_dict()
    incoming = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PrivacyBudgetExceededError, match="budget"):
        client.train_round(model=model, dataset=train, round_id=1, local_steps=200, lr=0.1)
    assert client.state_dict() == before
    assert all(torch.equal(a, b) for a, b in zip(incoming, model.parameters(), strict=True))


def test_nan_loss_fails_the_round_and_leaves_the_accountant_unchanged(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory
) -> None:
    train, _ = breast_cancer
    features, targets = train.tensors
    poisoned = TensorDataset(torch.full_like(features, float("nan")), targets)
    client = _client(DPConfig(noise_multiplier=1.0), len(train))
    client.train_round(model=make_mlp(), dataset=train, round_id=0, local_steps=2, lr=0.1)
    before = client.state_dict()
    with pytest.raises(NonFiniteLossError, match="not accounted"):
        client.train_round(model=make_mlp(), dataset=poisoned, round_id=1, local_steps=3, lr=0.1)
    assert client.state_dict() == before


def test_batchnorm_model_is_refused_or_fixed(
    breast_cancer: tuple[TensorDataset, TensorDataset],
) -> None:
    train, _ = breast_cancer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    client = _client(DPConfig(noise_multiplier=1.0), len(train))
    with pytest.raises(UnsupportedModelError, match="BatchNorm"):
        client.train_round(model=model, dataset=train, round_id=0, local_steps=2, lr=0.1)
    assert client.epsilon == 0.0 and client.events == ()
    fixed = prepare_model(model, fix=True)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())
    result = client.train_round(model=fixed, dataset=train, round_id=0, local_steps=2, lr=0.1)
    assert result.steps == 2 and client.epsilon > 0


def test_empty_poisson_batches_are_noisy_accounted_steps(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory
) -> None:
    train, _ = breast_cancer
    client = _client(DPConfig(noise_multiplier=1.0), len(train), batch_size=1)
    model = make_mlp()
    result = client.train_round(
        model=model,
        dataset=train,
        round_id=0,
        local_steps=30,
        lr=0.1,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.steps == 30 and result.event.steps == 30
    assert result.empty_batches > 5  # q = 1/455: most batches are empty
    assert result.event.sample_rate == 1 / len(train)
    assert float(np.abs(result.update).sum()) > 0  # noise was still added


def test_epochs_mode_and_argument_checks(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory
) -> None:
    train, _ = breast_cancer
    client = _client(DPConfig(noise_multiplier=1.0), len(train), batch_size=91)
    assert client.steps_for(local_steps=None, local_epochs=2) == 10  # 2 / (91/455)
    with pytest.raises(InvalidDPConfigError, match="exactly one"):
        client.steps_for(local_steps=3, local_epochs=1)
    result = client.train_round(model=make_mlp(), dataset=train, round_id=3, local_epochs=1, lr=0.1)
    assert result.steps == 5
    with pytest.raises(InvalidDPConfigError, match="round_id must increase"):
        client.train_round(model=make_mlp(), dataset=train, round_id=3, local_steps=1, lr=0.1)


def test_bad_client_parameters_are_named_errors() -> None:
    config = DPConfig(noise_multiplier=1.0, delta=1e-2)
    with pytest.raises(InvalidDPConfigError, match="delta must be < 1/n_records"):
        _client(config, 200)
    with pytest.raises(InvalidDPConfigError, match="batch_size"):
        _client(DPConfig(noise_multiplier=1.0), 50, batch_size=64)
    with pytest.raises(InvalidDPConfigError, match="planned_rounds"):
        _client(DPConfig(noise_multiplier=1.0), 500, planned_rounds=0)
    with pytest.raises(InvalidDPConfigError, match="grad_sample_mode"):
        _client(DPConfig(noise_multiplier=1.0), 500, grad_sample_mode="ew")
    client = _client(DPConfig(noise_multiplier=1.0), 500)
    with pytest.raises(InvalidDPConfigError, match="loaded into"):
        client.load_state_dict({**client.state_dict(), "client_id": "client-9"})


@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_other_grad_sample_modes_train_and_account_identically(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory, mode: str
) -> None:
    train, _ = breast_cancer
    config = DPConfig(noise_multiplier=1.0)
    reference = _client(config, len(train), batch_size=2)  # default mode: ghost clipping
    assert reference.grad_sample_mode == "ghost"
    client = _client(config, len(train), batch_size=2, grad_sample_mode=mode)
    kwargs = dict(dataset=train, round_id=0, local_steps=12, lr=0.1)
    expected = reference.train_round(model=make_mlp(), **kwargs)  # type: ignore[arg-type]
    result = client.train_round(
        model=make_mlp(),
        generator=torch.Generator().manual_seed(3),
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.steps == 12 and result.empty_batches > 0  # q = 2/455: empty batches occur
    assert np.all(np.isfinite(result.parameters))
    assert client.epsilon == reference.epsilon
    assert result.event.sample_rate == expected.event.sample_rate


@pytest.mark.slow
def test_five_client_federation_meets_target_epsilon_and_accuracy(
    breast_cancer: tuple[TensorDataset, TensorDataset],
    accuracy: Callable[[nn.Module, TensorDataset], float],
) -> None:
    """Package-level rehearsal of the issue's criterion: 5 clients, epsilon <= 1.0, acc >= 0.90."""
    train, test = breast_cancer
    features, targets = train.tensors
    parts = np.array_split(np.random.default_rng(0).permutation(len(train)), 5)
    rounds, steps = 8, 6
    config = DPConfig(target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0)
    clients = [
        SampleLevelDPClient(
            client_id=f"client-{i}",
            config=config,
            n_records=len(part),
            batch_size=32,
            planned_rounds=rounds,
            steps_per_round=steps,
        )
        for i, part in enumerate(parts)
    ]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 2))
    history = []
    for round_id in range(rounds):
        updates = [
            client.train_round(
                model=model,
                dataset=TensorDataset(features[part], targets[part]),
                round_id=round_id,
                local_steps=steps,
                lr=0.5,
            ).parameters
            for client, part in zip(clients, parts, strict=True)
        ]
        _load(model, np.mean(updates, axis=0))
        history.append(max(c.epsilon for c in clients))
    assert history == sorted(history) and history[-1] <= 1.0
    assert all(recompute_epsilon(c.events) == c.epsilon for c in clients)
    assert accuracy(model, test) >= 0.90


def test_poisson_off_is_recorded_and_accounted_without_amplification(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: MLPFactory
) -> None:
    train, _ = breast_cancer
    config = DPConfig(noise_multiplier=8.0, poisson_sampling=False)
    client = _client(config, len(train))
    result = client.train_round(model=make_mlp(), dataset=train, round_id=0, local_steps=4, lr=0.1)
    assert result.steps == 4 and not result.event.poisson_sampling
    unsampled = epsilon_for(
        mechanism="dpsgd-sample",
        sample_rate=1.0,
        noise_multiplier=4.0,  # sigma / 2: replace-one sensitivity 2C, no amplification
        steps=4,
        delta=1e-5,
        accountant="rdp",
    )
    assert client.epsilon == pytest.approx(unsampled)
    assert recompute_epsilon(client.events) == client.epsilon
