"""Evaluation and loss options of the imaging recipes: ``federation.eval_tta`` (class
probabilities averaged over each image and its horizontal flip),
``federation.label_smoothing`` (the plain trainer's cross-entropy) and ``federation.ema``
(a moving average of the global model over rounds), validated at start."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import TensorDataset

from experiments._config import FederationConfig, RunConfig, validate
from experiments._errors import ConfigError
from experiments._runner import build_federation
from experiments._training import SGDTrainer, evaluate

CPU = torch.device("cpu")


def _images(n: int = 40, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 28, 28, generator=generator), torch.arange(n) % 2)


def _linear(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))


def test_flip_tta_averages_the_probabilities_of_the_image_and_its_mirror() -> None:
    data = _images()
    model = _linear()
    images, labels = data.tensors
    with torch.no_grad():
        direct = torch.softmax(model(images), dim=1)
        mirrored = torch.softmax(model(images.flip(-1)), dim=1)
    expected = ((direct + mirrored) / 2).double()

    tta = evaluate(model, data, device=CPU, batch_size=16, flip_tta=True)

    truth = labels.numpy()
    assert tta.n_samples == len(truth)
    assert tta.loss == pytest.approx(-float(expected[torch.arange(40), labels].log().mean()))
    assert tta.accuracy == pytest.approx(float((expected.argmax(1) == labels).double().mean()))
    assert tta.auc == pytest.approx(roc_auc_score(truth, expected[:, 1].numpy()))
    plain = evaluate(model, data, device=CPU, batch_size=16)
    with torch.no_grad():
        reference = float(nn.functional.cross_entropy(model(images), labels))
    assert plain.loss == pytest.approx(reference)
    assert tta.loss != pytest.approx(plain.loss)


def test_flip_tta_changes_nothing_for_a_mirror_symmetric_model() -> None:
    class Symmetric(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _linear()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x + x.flip(-1))

    data = _images()
    model = Symmetric()
    plain = evaluate(model, data, device=CPU)
    tta = evaluate(model, data, device=CPU, flip_tta=True)
    assert tta.accuracy == plain.accuracy
    assert tta.auc == pytest.approx(plain.auc)
    assert tta.loss == pytest.approx(plain.loss, rel=1e-5)


def test_a_left_right_detector_loses_its_signal_under_flip_tta() -> None:
    # logit(class 1) = brightness of the left half minus the right half: the flip negates
    # it, so the averaged probabilities are exactly 1/2 (a flip-invariant task would not).
    class LeftRight(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = 8 * (x[..., :14].mean(dim=(1, 2, 3)) - x[..., 14:].mean(dim=(1, 2, 3)))
            return torch.stack((torch.zeros_like(score), score), dim=1)

    labels = torch.arange(20) % 2
    images = torch.zeros(20, 1, 28, 28)
    images[labels == 1, ..., :14] = 1.0
    images[labels == 0, ..., 14:] = 1.0
    data = TensorDataset(images, labels)
    plain = evaluate(LeftRight(), data, device=CPU)
    tta = evaluate(LeftRight(), data, device=CPU, flip_tta=True)
    assert plain.accuracy == 1.0
    assert plain.loss < 0.01
    assert tta.loss == pytest.approx(math.log(2))
    assert tta.auc == pytest.approx(0.5)


def test_label_smoothing_is_the_plain_trainers_loss() -> None:
    data = _images(n=8)
    images, labels = data.tensors
    eps = 0.1
    model = _linear()
    with torch.no_grad():
        log_p = torch.log_softmax(model(images), dim=1)
    nll = -log_p[torch.arange(8), labels].mean()
    uniform = -log_p.mean(dim=1).mean()
    expected = (1 - eps) * nll + eps * uniform

    results = {}
    for smoothing in (0.0, eps):
        config = FederationConfig(
            batch_size=8, local_steps=1, lr=0.0, optimizer="sgd", label_smoothing=smoothing
        )
        result = SGDTrainer(config).train(
            model,
            data,
            client_id=0,
            round_id=1,
            generator=torch.Generator().manual_seed(0),
            device=CPU,
        )
        results[smoothing] = result.mean_loss
    assert results[0.0] == pytest.approx(float(nll), rel=1e-5)
    assert results[eps] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("field", ["label_smoothing", "ema"])
@pytest.mark.parametrize("value", [-0.1, 1.0, True, "x", math.nan])
def test_label_smoothing_and_ema_must_be_in_zero_one(
    run_cfg: Callable[..., RunConfig], field: str, value: object
) -> None:
    cfg = run_cfg()
    setattr(cfg.federation, field, value)
    with pytest.raises(ConfigError, match=rf"federation\.{field}"):
        validate(cfg)


def test_label_smoothing_is_refused_under_sample_level_dp(
    run_cfg: Callable[..., RunConfig],
) -> None:
    validate(run_cfg("dp=off", "federation.label_smoothing=0.1"))
    validate(run_cfg("dp=client", "federation.label_smoothing=0.1"))
    with pytest.raises(ConfigError, match=r"federation\.label_smoothing=0\.1 .*dp=sample"):
        validate(run_cfg("dp=sample", "federation.label_smoothing=0.1"))


def test_eval_tta_needs_images_and_a_boolean(run_cfg: Callable[..., RunConfig]) -> None:
    validate(run_cfg("dataset=medmnist", "model=cnn", "federation.eval_tta=true"))
    with pytest.raises(ConfigError, match=r"federation\.eval_tta=true flips images"):
        validate(run_cfg("dataset=breast_cancer", "federation.eval_tta=true"))
    cfg = run_cfg("dataset=medmnist", "model=cnn")
    cfg.federation.eval_tta = 1  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"federation\.eval_tta"):
        validate(cfg)


def test_federation_evaluates_with_flip_tta_when_configured(
    medmnist_dir: object, run_cfg: Callable[..., RunConfig]
) -> None:
    overrides = ("+experiment=breastmnist_nonprivate", "secagg=plain", "chain=none")
    plain = build_federation(run_cfg(*overrides))
    tta = build_federation(run_cfg(*overrides, "federation.eval_tta=true"))
    test_set = tta.data.pooled_test
    expected = evaluate(tta.model, test_set, device=CPU, flip_tta=True)
    assert tta.evaluate_pooled() == expected
    assert plain.evaluate_pooled() == evaluate(plain.model, test_set, device=CPU)
    assert expected.loss != pytest.approx(plain.evaluate_pooled().loss)
    per_client = tta.evaluate_clients()
    client = tta.data.clients[0]
    assert per_client[client.name] == evaluate(tta.model, client.test, device=CPU, flip_tta=True)
    assert sum(e.n_samples for e in per_client.values()) == len(test_set)


def test_ema_averages_the_global_models_and_leaves_training_alone(
    run_cfg: Callable[..., RunConfig],
) -> None:
    overrides = ("dp=off", "secagg=plain", "chain=none", "federation.rounds=4")
    decay = 0.6
    raw = build_federation(run_cfg(*overrides))
    averaged = build_federation(run_cfg(*overrides, f"federation.ema={decay}"))
    assert averaged.ema is None and averaged.evaluation_model() is averaged.model
    expected: torch.Tensor | None = None
    for round_id in range(1, 5):
        raw.run_round(round_id)
        record = averaged.run_round(round_id)
        global_now = parameters_to_vector(averaged.model.parameters()).detach()
        # clients train the global model, which the average never feeds back into
        assert torch.equal(global_now, parameters_to_vector(raw.model.parameters()).detach())
        expected = (
            global_now.clone() if expected is None else decay * expected + (1 - decay) * global_now
        )
        assert averaged.ema is not None
        assert torch.allclose(averaged.ema, expected, rtol=0, atol=1e-6)
        # the round's record is the average's evaluation, not the global model's
        reference = build_federation(run_cfg(*overrides)).model
        vector_to_parameters(averaged.ema, reference.parameters())
        evaluation = evaluate(reference, averaged.data.pooled_test, device=CPU)
        assert record.accuracy == evaluation.accuracy
    assert averaged.evaluate_pooled() != raw.evaluate_pooled()
    assert not torch.equal(averaged.ema, parameters_to_vector(averaged.model.parameters()))


def test_ema_is_allowed_under_dp_as_post_processing(run_cfg: Callable[..., RunConfig]) -> None:
    validate(run_cfg("dp=sample", "federation.ema=0.9"))
    validate(run_cfg("dp=client", "federation.ema=0.9"))
