from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from models._exceptions import MapTooSmallError, TrainingError
from models.backbones import SlimResNet, build_backbone
from models.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from models.finetune import FinetuneConfig, finetune_atcon, named_layer
from models.guards import (
    CollapseGuard,
    CollapseGuardConfig,
    collapse_stats,
    preservation_kl,
)
from models.schedules import global_batches, labeled_probability, local_slice, warmup_factor
from models.training import (
    StepResult,
    SupervisedConfig,
    Trainer,
    predict_scores,
    supervised_loss,
    train_supervised,
)
from tests.conftest import TinyNet

NUM_CLASSES = 4


def _corner_images(n: int, seed: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k lights one quarter of the image: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    images = 0.3 * torch.randn(n, 3, size, size, generator=generator)
    half = size // 2
    for i, k in enumerate(labels.tolist()):
        y, x = divmod(k, 2)
        images[i, :, y * half : (y + 1) * half, x * half : (x + 1) * half] += 2.0
    return images, F.one_hot(labels, NUM_CLASSES).float()


@pytest.fixture
def labeled() -> TensorDataset:
    return TensorDataset(*_corner_images(24, seed=0))


@pytest.fixture
def unlabeled() -> torch.Tensor:
    return _corner_images(32, seed=1)[0]


def _net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(NUM_CLASSES)


def _accuracy(model: nn.Module, data: TensorDataset) -> float:
    scores, targets = predict_scores(model, data, multi_label=False)
    assert targets is not None
    return float((scores.argmax(1) == targets.argmax(1)).float().mean())


# ------------------------------------------------------------------ schedules


def test_labeled_probability_and_warmup_are_the_documented_formulas():
    assert labeled_probability(2.0, 10, 60) == pytest.approx(20 / 80)
    assert labeled_probability(0.0, 10, 60) == 0.0
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    with pytest.raises(ValueError, match="alpha"):
        labeled_probability(-1.0, 1, 1)


def test_the_labeled_step_probability_has_a_floor():
    """Issue 12: 9 labels and 471 unlabeled frames gave 9/480 = 1.9% labeled steps."""
    assert labeled_probability(1.0, 9, 471) == pytest.approx(9 / 480)
    assert labeled_probability(1.0, 9, 471, min_fraction=0.25) == 0.25
    assert labeled_probability(2.0, 10, 60, min_fraction=0.1) == pytest.approx(20 / 80)
    assert labeled_probability(1.0, 0, 60, min_fraction=0.25) == 0.0  # no labels: none
    assert labeled_probability(0.0, 10, 60, min_fraction=0.25) == 0.0  # alpha 0: a control
    with pytest.raises(ValueError, match="min_fraction"):
        labeled_probability(1.0, 1, 1, min_fraction=1.5)
    with pytest.raises(ValueError, match="min_labeled_fraction"):
        FinetuneConfig(min_labeled_fraction=-0.1)
    assert FinetuneConfig().min_labeled_fraction == 0.25


def test_a_few_labels_get_the_floor_share_of_steps(labeled, unlabeled):
    few = TensorDataset(*labeled[:3])
    config = FinetuneConfig(steps=40, multi_label=False, lr=1e-5)  # the defaults' floor
    outcome = finetune_atcon(_net(), unlabeled, config, labeled=few)
    assert outcome.labeled_probability == 0.25  # not 3/35
    assert 4 <= outcome.labeled_steps <= 18


def test_global_batches_cover_each_epoch_and_local_slices_partition_them():
    stream = global_batches(10, 4, seed=3)
    epoch = [next(stream) for _ in range(3)]
    assert sorted(i for batch in epoch for i in batch) == list(range(10))
    assert [len(b) for b in epoch] == [4, 4, 2]
    assert next(global_batches(10, 4, seed=3)) == epoch[0]
    batch = list(range(7))
    parts = [local_slice(batch, r, 3) for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]


# ------------------------------------------------------------------ supervised


@pytest.mark.parametrize("multi_label", [False, True])
def test_supervised_training_learns_a_separable_task(labeled, multi_label):
    model = _net()
    before = _accuracy(model, labeled)
    config = SupervisedConfig(epochs=15, batch_size=8, lr=1e-2, multi_label=multi_label)
    outcome = train_supervised(model, labeled, config)
    assert outcome.steps == 15 * 3
    assert outcome.history[-1]["supervised"] < outcome.history[0]["supervised"]
    assert _accuracy(model, labeled) > max(before, 0.9)
    assert not model.training


def test_supervised_losses_are_bce_and_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.1]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bce = supervised_loss(logits, targets, multi_label=True)
    assert bce.mean() == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, targets)))
    ce = supervised_loss(logits, targets, multi_label=False)
    assert ce.tolist() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([0, 1]), reduction="none").tolist()
    )
    with pytest.raises(TrainingError, match="exactly one class"):
        supervised_loss(logits, torch.tensor([[1.0, 1.0], [0.0, 1.0]]), multi_label=False)


def test_training_is_deterministic_with_a_seed(labeled, unlabeled):
    def run(seed: int) -> dict[str, torch.Tensor]:
        model = _net(seed)
        train_supervised(model, labeled, SupervisedConfig(epochs=2, batch_size=8, seed=seed))
        config = FinetuneConfig(
            steps=4, schedule="alternating", alpha=1.0, multi_label=False, seed=seed
        )
        finetune_atcon(model, unlabeled, config, labeled=labeled)
        return model.state_dict()

    first, second, other = run(0), run(0), run(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_trainer_is_model_agnostic_and_calls_callbacks():
    model = nn.Linear(3, 1)
    events: list[str] = []

    class Recorder:
        def on_train_start(self, trainer, total_steps):
            events.append(f"start {total_steps}")

        def on_step_end(self, trainer, result):
            events.append(f"{result.kind} {result.step}")

        def on_train_end(self, trainer):
            events.append("end")

    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def step(i: int) -> StepResult:
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return StepResult(i, "regression", {"mse": float(loss.detach())})

    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[Recorder()])
    history = trainer.fit(step, 3)
    assert events == ["start 3", "regression 0", "regression 1", "regression 2", "end"]
    assert history[-1]["mse"] < history[0]["mse"]


def test_nan_loss_stops_supervised_training(labeled):
    model = _net()

    class Poison:
        def on_train_start(self, trainer, total_steps): ...

        def on_step_end(self, trainer, result):
            with torch.no_grad():
                model.fc.weight.fill_(math.nan)

        def on_train_end(self, trainer): ...

    with pytest.raises(TrainingError, match=r"supervised loss became nan at step 1"):
        train_supervised(
            model, labeled, SupervisedConfig(epochs=2, batch_size=8), callbacks=[Poison()]
        )


# ------------------------------------------------------------------ fine-tuning


@pytest.mark.parametrize("schedule", ["alternating", "combined", "unsupervised"])
def test_finetuning_keeps_batchnorm_frozen(labeled, unlabeled, schedule):
    model = _net()
    train_supervised(model, labeled, SupervisedConfig(epochs=2, batch_size=8))
    bn = model.features[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    seen: list[bool] = []

    class Watch:
        def on_train_start(self, trainer, total_steps): ...

        def on_step_end(self, trainer, result):
            seen.append(bn.training)

        def on_train_end(self, trainer): ...

    config = FinetuneConfig(schedule=schedule, steps=5, alpha=2.0, multi_label=False)
    finetune_atcon(
        model,
        unlabeled,
        config,
        labeled=None if schedule == "unsupervised" else labeled,
        callbacks=[Watch()],
    )
    assert seen == [False] * 5
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    assert not torch.equal(bn.weight, torch.ones_like(bn.weight))  # the affine part trains


def test_alternating_takes_labeled_steps_with_the_schedule_probability(labeled, unlabeled):
    config = FinetuneConfig(steps=40, alpha=32 / 24, multi_label=False, lr=1e-5)
    outcome = finetune_atcon(_net(), unlabeled, config, labeled=labeled)
    assert outcome.labeled_probability == pytest.approx(0.5)
    assert 10 <= outcome.labeled_steps <= 30
    assert outcome.labeled_steps + outcome.unlabeled_steps == 40
    kinds = {row["kind"] for row in outcome.history}
    assert kinds == {"supervised", "atcon"}
    none = finetune_atcon(
        _net(), unlabeled, FinetuneConfig(steps=5, alpha=0.0, multi_label=False), labeled=labeled
    )
    assert none.labeled_steps == 0


def test_schedules_that_need_labels_refuse_to_run_without(unlabeled):
    with pytest.raises(ValueError, match="alternating schedule needs a labeled set"):
        finetune_atcon(_net(), unlabeled, FinetuneConfig(steps=1))
    with pytest.raises(ValueError, match="balance_gradients"):
        finetune_atcon(
            _net(),
            unlabeled,
            FinetuneConfig(steps=1, schedule="unsupervised", balance_gradients=True),
        )
    with pytest.raises(ValueError, match="schedule must be one of"):
        FinetuneConfig(schedule="sometimes")


def test_gradient_balancing_caps_the_atcon_gradient(labeled, unlabeled):
    config = FinetuneConfig(
        schedule="combined",
        steps=3,
        multi_label=False,
        balance_gradients=True,
        balance_ratio=0.01,
        atcon_weight=10.0,
    )
    outcome = finetune_atcon(_net(), unlabeled, config, labeled=labeled)
    for row in outcome.history:
        assert row["atcon_scale"] < 1.0
        applied = row["atcon_scale"] * row["atcon_grad_norm"]
        assert applied == pytest.approx(0.01 * row["sup_grad_norm"], rel=1e-4)


def test_atcon_weight_warms_up_linearly(unlabeled):
    config = FinetuneConfig(
        schedule="unsupervised", steps=4, atcon_weight=0.5, atcon_warmup_steps=4, multi_label=False
    )
    outcome = finetune_atcon(_net(), unlabeled, config)
    assert [row["atcon_weight"] for row in outcome.history] == [0.125, 0.25, 0.375, 0.5]


def test_preservation_kl_is_zero_at_the_start_and_matches_its_formula():
    logits, ref = torch.randn(5, 3), torch.randn(5, 3)
    assert float(preservation_kl(ref, ref, multi_label=False)) == pytest.approx(0.0, abs=1e-6)
    p0, p = F.softmax(ref, 1), F.softmax(logits, 1)
    expected = (p0 * (p0.log() - p.log())).sum(1).mean()
    assert float(preservation_kl(logits, ref, multi_label=False)) == pytest.approx(float(expected))
    q, s = torch.sigmoid(ref), torch.sigmoid(logits)
    bern = (q * (q / s).log() + (1 - q) * ((1 - q) / (1 - s)).log()).sum(1).mean()
    assert float(preservation_kl(logits, ref, multi_label=True)) == pytest.approx(
        float(bern), rel=1e-5
    )


def test_preservation_term_holds_predictions_near_the_start(labeled, unlabeled):
    def drift(weight: float) -> float:
        model = _net()
        train_supervised(model, labeled, SupervisedConfig(epochs=3, batch_size=8))
        before = predict_scores(model, TensorDataset(unlabeled), multi_label=False)[0]
        config = FinetuneConfig(
            schedule="unsupervised",
            steps=8,
            lr=3e-3,
            multi_label=False,
            preserve_weight=weight,
            guard=CollapseGuardConfig(enabled=False),
        )
        finetune_atcon(model, unlabeled, config)
        after = predict_scores(model, TensorDataset(unlabeled), multi_label=False)[0]
        return float((after - before).abs().mean())

    assert drift(100.0) < drift(0.0)


def test_collapse_statistics_and_guard():
    spread = torch.eye(4).repeat(2, 1) * 5
    stats = collapse_stats(spread, multi_label=False)
    assert stats.distinct == 1.0 and stats.entropy == pytest.approx(1.0)
    collapsed = torch.tensor([[5.0, 0, 0, 0]]).repeat(8, 1)
    low = collapse_stats(collapsed, multi_label=False)
    assert low.distinct == 0.25 and low.entropy < 0.2
    guard = CollapseGuard(CollapseGuardConfig(window=2), multi_label=False)
    guard.set_reference([spread])
    assert guard.update(spread, step=0) is None
    assert guard.update(spread, step=1).distinct == 1.0
    with pytest.raises(TrainingError, match="collapsed at step 3"):
        guard.update(collapsed, step=2)
        guard.update(collapsed, step=3)


def _collapser(model: TinyNet):
    class Collapse:
        """After the first step, make the model answer class 0 for everything."""

        def on_train_start(self, trainer, total_steps): ...

        def on_step_end(self, trainer, result):
            with torch.no_grad():
                model.fc.weight.zero_()
                model.fc.bias.copy_(torch.tensor([20.0, 0.0, 0.0, 0.0]))

        def on_train_end(self, trainer): ...

    return Collapse()


def test_collapse_stops_finetuning_and_restores_the_starting_model(labeled, unlabeled):
    model = _net()
    train_supervised(model, labeled, SupervisedConfig(epochs=4, batch_size=8, lr=1e-2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = FinetuneConfig(
        schedule="unsupervised", steps=20, multi_label=False, guard=CollapseGuardConfig(window=2)
    )
    with pytest.raises(TrainingError, match=r"collapsed at step 2.*starting model is kept"):
        finetune_atcon(model, unlabeled, config, callbacks=[_collapser(model)])
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert not model.training
    # without the guard the same run goes to the end, collapsed
    off = FinetuneConfig(
        schedule="unsupervised",
        steps=4,
        multi_label=False,
        guard=CollapseGuardConfig(enabled=False, window=2),
    )
    outcome = finetune_atcon(model, unlabeled, off, callbacks=[_collapser(model)])
    assert outcome.final_stats is not None and outcome.final_stats["distinct"] == 0.25


def test_nan_loss_stops_finetuning_and_restores_the_starting_model(labeled, unlabeled):
    model = _net()
    start = {k: v.clone() for k, v in model.state_dict().items()}

    class Poison:
        def on_train_start(self, trainer, total_steps): ...

        def on_step_end(self, trainer, result):
            with torch.no_grad():
                model.features[0].weight.fill_(math.nan)

        def on_train_end(self, trainer): ...

    config = FinetuneConfig(
        schedule="combined", steps=5, multi_label=False, guard=CollapseGuardConfig(enabled=False)
    )
    with pytest.raises(TrainingError, match="became nan at step 1"):
        finetune_atcon(model, unlabeled, config, labeled=labeled, callbacks=[Poison()])
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_named_layer_picks_the_gradcam_layer():
    model = build_backbone("resnet18_slim", 3, width=4)
    assert named_layer(model, "layer3") is model.layer3
    assert named_layer(model, None) is None
    with pytest.raises(ValueError, match="layer 'layer9'"):
        named_layer(model, "layer9")


# ------------------------------------------------------------------ slim backbone


def test_slim_resnet_keeps_layer4_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_backbone("resnet18_slim", 3, width=8)
    assert isinstance(model, SlimResNet) and model.layer4[0].conv1.out_channels == 64
    assert model.fc.out_features == 3
    x = torch.randn(2, 3, 32, 32)
    assert model.layer4(model.layer3(model.layer2(model.layer1(model.conv1(x))))).shape[-1] == 4
    info = CheckpointInfo(
        arch="resnet18_slim", class_names=["a", "b", "c"], input_size=32, arch_kwargs={"width": 8}
    )
    save_checkpoint(tmp_path / "m.pt", model, info)
    loaded, loaded_info = load_checkpoint(tmp_path / "m.pt")
    model.eval()
    assert loaded_info.arch_kwargs == {"width": 8}
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18_slim", 3, width=0)


@pytest.mark.parametrize("schedule", ["alternating", "combined", "unsupervised"])
def test_every_schedule_refuses_one_pixel_maps_before_the_first_step(schedule):
    """TinyNet's `features` halves 2x2 images to a 1x1 map: no Pearson correlation."""
    tiny = _corner_images(8, seed=0, size=2)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps: list[int] = []

    class Steps:
        def on_train_start(self, trainer, total_steps): ...

        def on_step_end(self, trainer, result):
            steps.append(result.step)

        def on_train_end(self, trainer): ...

    config = FinetuneConfig(steps=2, schedule=schedule, multi_label=False)
    with pytest.raises(MapTooSmallError, match=r"'features' is 1x1 for 2x2") as caught:
        finetune_atcon(model, tiny[0], config, labeled=TensorDataset(*tiny), callbacks=[Steps()])
    assert "features.2" in str(caught.value)  # the earlier layer that is large enough
    assert steps == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    control = FinetuneConfig(steps=1, schedule=schedule, multi_label=False, atcon_weight=0.0)
    finetune_atcon(_net(), tiny[0], control, labeled=TensorDataset(*tiny))  # no maps: runs
