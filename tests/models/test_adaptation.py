"""Adaptation methods: the grammar, each component's effect, and the bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.adaptation import AdaptConfig, adapt, batchnorm_layers, reestimate_batchnorm
from models.augment import strong_view, weak_view
from models.backbones import build_backbone
from models.methods import method_name, parse_method
from models.metrics import mask_attention_scores


def _model(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet18_slim", classes, width=4).eval()


def _images(n: int, shift: float = 0.0, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 24, 24, generator=generator) * scale + shift


def test_method_names_are_canonical_and_bad_ones_refused() -> None:
    assert parse_method("supervised+adabn") == ("adabn", "supervised")
    assert parse_method(" None ") == ()
    assert method_name(parse_method("recalibrate+anchor+supervised")) == (
        "anchor+supervised+recalibrate"
    )
    for bad, message in (
        ("magic", "'\\+'-joined set"),
        ("adabn+", "'\\+'-joined set"),
        ("adabn+adabn", "twice"),
        ("tent+atcon", "tent and atcon"),
        ("distill+adabn", "distill and adabn"),
        ("atcon+pseudo", "atcon cannot be combined with pseudo"),
        ("anchor+atcon+supervised", "atcon cannot be combined with anchor"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_method(bad)
    with pytest.raises(ValueError, match="needs steps"):
        AdaptConfig(method="supervised", steps=0)
    with pytest.raises(ValueError, match="pseudo_threshold"):
        AdaptConfig(pseudo_threshold=0.4)


def test_adabn_replaces_the_statistics_with_those_of_the_target() -> None:
    model = _model()
    target = _images(64, shift=2.0, scale=3.0)
    flags = {m: m.training for m in model.modules()}
    seen = reestimate_batchnorm(model, [target[:32], target[32:]])
    assert seen == 64
    assert {m: m.training for m in model.modules()} == flags
    first = batchnorm_layers(model)[0]
    with torch.no_grad():
        features = model.conv1(target)  # the first BatchNorm's input
    expected = features.mean(dim=(0, 2, 3))
    assert torch.allclose(first.running_mean, expected, atol=1e-4)
    assert first.momentum == 0.1  # restored
    untouched = _model()
    assert reestimate_batchnorm(untouched, []) == 0
    assert torch.equal(
        batchnorm_layers(untouched)[0].running_mean, batchnorm_layers(_model())[0].running_mean
    )


def test_recalibrate_makes_each_class_fire_as_often_as_in_domain() -> None:
    model = _model()
    in_domain = _images(96, seed=1)
    target = _images(128, shift=1.5, scale=2.0, seed=2)  # "seen differently"
    thresholds = [0.5, 0.3, 0.7]
    with torch.no_grad():
        share = (torch.sigmoid(model(in_domain)) >= torch.tensor(thresholds)).float().mean(0)
        before = model.fc.weight.clone()
    outcome = adapt(
        model,
        target,
        AdaptConfig(method="recalibrate", seed=0),
        anchor=in_domain,
        thresholds=thresholds,
    )
    assert outcome.recalibration is not None and outcome.steps == 0
    with torch.no_grad():
        fired = (torch.sigmoid(model(target)) >= torch.tensor(thresholds)).float().mean(0)
    for c in range(3):
        if 0 < share[c] < 1:
            assert abs(float(fired[c]) - float(share[c])) <= 1.5 / 128
    assert torch.equal(model.fc.weight, before)
    with pytest.raises(ValueError, match="thresholds"):
        adapt(_model(), target, AdaptConfig(method="recalibrate"), anchor=in_domain)
    with pytest.raises(ValueError, match="in-domain frames"):
        adapt(_model(), target, AdaptConfig(method="recalibrate"), thresholds=thresholds)
    with pytest.raises(ValueError, match="multi-label"):
        adapt(
            _model(),
            target,
            AdaptConfig(method="recalibrate", multi_label=False),
            anchor=in_domain,
            thresholds=thresholds,
        )


def test_tent_trains_only_the_batchnorm_affine_parameters() -> None:
    model = _model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    adapt(model, _images(32, shift=1.0), AdaptConfig(method="tent", steps=3, lr=1e-2))
    state = model.state_dict()
    assert not torch.equal(state["bn1.weight"], start["bn1.weight"])
    assert torch.equal(state["conv1.weight"], start["conv1.weight"])
    assert torch.equal(state["fc.weight"], start["fc.weight"])
    assert all(p.requires_grad for p in model.parameters())  # flags given back


def test_supervised_and_distill_need_their_data_and_keep_student_statistics() -> None:
    images = _images(16)
    labeled = torch.utils.data.TensorDataset(images, torch.randint(0, 2, (16, 3)).float())
    with pytest.raises(ValueError, match="needs labeled frames"):
        adapt(_model(), images, AdaptConfig(method="supervised", steps=1))
    with pytest.raises(ValueError, match="in-domain frames"):
        adapt(_model(), images, AdaptConfig(method="anchor", steps=1))
    model = _model()
    mean = batchnorm_layers(model)[0].running_mean.clone()
    outcome = adapt(
        model,
        _images(32, shift=2.0),
        AdaptConfig(method="distill+supervised", steps=2, batch_size=4, unlabeled_batch_size=8),
        labeled=labeled,
    )
    assert outcome.steps == 2 and [h["kind"] for h in outcome.history] == ["distill+supervised"] * 2
    assert {"distill", "supervised"} <= set(outcome.history[0])
    assert torch.equal(batchnorm_layers(model)[0].running_mean, mean)  # the teacher's moved


def test_pseudo_labels_report_their_confident_share() -> None:
    model = _model()
    outcome = adapt(
        model,
        _images(32),
        AdaptConfig(method="pseudo", steps=2, unlabeled_batch_size=8, pseudo_threshold=0.6),
    )
    assert outcome.pseudo_share is not None and 0.0 <= outcome.pseudo_share <= 1.0


@pytest.mark.parametrize("method", ["adabn+pseudo", "adabn+atcon"])
def test_a_stopped_run_gives_back_the_model_before_adabn(method: str) -> None:
    """A NaN loss (joint steps) or ATCON's stop: the starting weights and statistics."""
    from models._exceptions import TrainingError

    model = _model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    images = _images(16)
    images[3] = float("nan")
    with pytest.raises(TrainingError):
        adapt(model, images, AdaptConfig(method=method, steps=3, unlabeled_batch_size=16))
    for key, value in model.state_dict().items():
        assert torch.equal(value, start[key]), key


def test_atcon_in_a_method_is_the_published_schedule_after_adabn() -> None:
    """``adabn+atcon+supervised`` = AdaBN, then finetune_atcon alternating with the labels."""
    from models.finetune import FinetuneConfig, finetune_atcon

    images = _images(32, shift=1.0, scale=2.0, seed=3)
    targets = torch.randint(0, 2, (32, 3), generator=torch.Generator().manual_seed(5)).float()
    labeled = torch.utils.data.TensorDataset(_images(32, seed=4), targets)  # P(labeled) = 1/2
    config = AdaptConfig(
        method="supervised+atcon+adabn", steps=6, lr=1e-3, batch_size=4, unlabeled_batch_size=8
    )
    model = _model()
    start = batchnorm_layers(model)[0].running_mean.clone()
    outcome = adapt(model, images, config, labeled=labeled)
    reference = _model()
    adapt(reference, images, AdaptConfig(method="adabn", unlabeled_batch_size=8))
    published = finetune_atcon(
        reference,
        images,
        FinetuneConfig(
            schedule="alternating",
            steps=6,
            lr=1e-3,
            batch_size=4,
            unlabeled_batch_size=4,  # half the unlabeled batch: an ATCON step costs two
            atcon_warmup_steps=config.atcon_warmup_steps,
        ),
        labeled=labeled,
    )
    assert outcome.method == "adabn+atcon+supervised" and outcome.adabn_images == 32
    assert outcome.labeled_steps == published.labeled_steps
    assert 0 < published.labeled_steps < 6  # both kinds of step ran
    assert not torch.equal(batchnorm_layers(model)[0].running_mean, start)
    for (key, value), expected in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.allclose(value.float(), expected.float(), atol=1e-6), key
    unsupervised = adapt(_model(), images, AdaptConfig(method="atcon", steps=2))
    assert unsupervised.labeled_steps == 0 and unsupervised.adabn_images == 0


def test_views_are_seeded_and_keep_shapes() -> None:
    x = _images(6)
    a = weak_view(x, torch.Generator().manual_seed(1))
    b = weak_view(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    strong = strong_view(x, torch.Generator().manual_seed(1))
    assert strong.shape == x.shape and not torch.allclose(strong, a)
    with pytest.raises(ValueError, match="batch"):
        weak_view(x[0], torch.Generator())


def test_mask_scores_point_at_the_object() -> None:
    model = _model()
    images = _images(4)
    masks = torch.zeros(4, 48, 48, dtype=torch.bool)
    masks[:, :, :] = True  # the whole frame: every maximum is a hit, IoU is the map's share
    hits, iou = mask_attention_scores(model, images, torch.zeros(4), masks)
    assert hits.all() and ((iou > 0) & (iou <= 1)).all()
    empty = torch.zeros(4, 48, 48, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least one pixel"):
        mask_attention_scores(model, images, torch.zeros(4), empty)
