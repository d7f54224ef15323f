"""Attention maps: parity with captum, batching, differentiability, restoration, bad input."""

from __future__ import annotations

import threading

import pytest
import torch
from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam
from torch import nn
from torchvision.models import densenet121, efficientnet_b0, mobilenet_v2, resnet18, resnet50

from models import LayerNotFoundError
from models._hooks import guided_relus
from models.attention import (
    grad_cam,
    gradcam_and_guided_backprop,
    guided_backprop,
    integrated_gradients,
    quadrature,
)

RTOL = 1e-4


def _seeded(factory, num_classes: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return factory(num_classes=num_classes).double().eval()


@pytest.fixture(scope="module", params=["resnet18", "resnet50"])
def resnet(request: pytest.FixtureRequest) -> nn.Module:
    return _seeded({"resnet18": resnet18, "resnet50": resnet50}[request.param])


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 64, 64, generator=generator, dtype=torch.float64)
    return images, torch.tensor([0, 4, 2])


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.detach().abs().max()
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * float(scale))


def test_grad_cam_matches_captum(resnet: nn.Module, batch) -> None:
    images, targets = batch
    ours = grad_cam(resnet, images, targets)
    theirs = LayerGradCam(resnet, resnet.layer4).attribute(
        images, target=targets, relu_attributions=False
    )
    assert ours.shape == (3, 2, 2)
    _close(ours, theirs.squeeze(1))


def test_guided_backprop_matches_captum(resnet: nn.Module, batch) -> None:
    images, targets = batch
    ours = guided_backprop(resnet, images, targets)
    theirs = GuidedBackprop(resnet).attribute(images, target=targets)
    assert ours.shape == images.shape
    _close(ours, theirs)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_right"])
def test_integrated_gradients_matches_captum(resnet: nn.Module, batch, rule: str) -> None:
    images, targets = batch
    ours = integrated_gradients(resnet, images, targets, steps=8, rule=rule)
    theirs = IntegratedGradients(resnet).attribute(
        images, baselines=torch.zeros_like(images), target=targets, n_steps=8, method=rule
    )
    _close(ours, theirs)


def test_integrated_gradients_completeness(batch) -> None:
    model = _seeded(resnet18)
    images, targets = batch
    attributions = integrated_gradients(model, images, targets, steps=64, internal_batch_size=50)
    with torch.no_grad():
        gap = model(images).gather(1, targets[:, None]) - model(torch.zeros_like(images)).gather(
            1, targets[:, None]
        )
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap.squeeze(1), rtol=2e-2, atol=0)


def test_guided_backprop_differs_from_plain_gradient(batch) -> None:
    """Guards the guided rule itself: a plain gradient would also match nothing above."""
    model = _seeded(resnet18)
    images, targets = batch
    x = images.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)[0]
    guided = guided_backprop(model, images, targets)
    assert not torch.allclose(plain, guided, rtol=1e-2)


def test_batched_equals_one_image_at_a_time(batch) -> None:
    model = _seeded(resnet18)
    images, targets = batch
    cams = grad_cam(model, images, targets)
    gbs = guided_backprop(model, images, targets)
    for i in range(images.shape[0]):
        _close(cams[i : i + 1], grad_cam(model, images[i : i + 1], targets[i : i + 1]))
        _close(gbs[i : i + 1], guided_backprop(model, images[i : i + 1], targets[i : i + 1]))


def test_default_targets_are_top_classes(batch) -> None:
    model = _seeded(resnet18)
    images, _ = batch
    with torch.no_grad():
        top = model(images).argmax(dim=1)
    _close(grad_cam(model, images), grad_cam(model, images, top))


def test_combined_inference_pass_equals_separate_maps(batch) -> None:
    model = _seeded(resnet18)
    images, targets = batch
    cam, gb, used = gradcam_and_guided_backprop(model, images, targets)
    assert torch.equal(used, targets)
    _close(cam, grad_cam(model, images, targets))
    _close(gb, guided_backprop(model, images, targets))


def test_combined_pass_falls_back_when_a_relu_follows_the_layer(tiny_net, images) -> None:
    layer = tiny_net.features[0]  # a ReLU runs after this conv
    targets = torch.tensor([1, 0, 3])
    cam, gb, _ = gradcam_and_guided_backprop(tiny_net, images, targets, layer=layer)
    _close(cam, grad_cam(tiny_net, images, targets, layer=layer))
    _close(gb, guided_backprop(tiny_net, images, targets))


@pytest.mark.parametrize("method", ["grad_cam", "guided_backprop", "integrated_gradients"])
def test_create_graph_reaches_every_parameter(tiny_net, images, method: str) -> None:
    targets = torch.tensor([0, 1, 2])
    if method == "grad_cam":
        maps = grad_cam(tiny_net, images, targets, create_graph=True)
    elif method == "guided_backprop":
        maps = guided_backprop(tiny_net, images, targets, create_graph=True)
    else:
        maps = integrated_gradients(tiny_net, images, targets, steps=4, create_graph=True)
    assert maps.requires_grad
    convs = [m.weight for m in tiny_net.modules() if isinstance(m, nn.Conv2d)]
    grads = torch.autograd.grad(maps.square().sum(), convs, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_without_create_graph_maps_are_detached(tiny_net, images) -> None:
    assert not grad_cam(tiny_net, images).requires_grad
    assert not guided_backprop(tiny_net, images, None).requires_grad
    assert all(p.grad is None for p in tiny_net.parameters())


def test_model_restored_after_calls_and_after_errors(tiny_net, images) -> None:
    tiny_net.features[1].train()  # a mixed train/eval state must survive untouched
    flags = [m.training for m in tiny_net.modules()]
    modules = list(tiny_net.modules())
    grad_cam(tiny_net, images)
    guided_backprop(tiny_net, images, None, create_graph=True)
    gradcam_and_guided_backprop(tiny_net, images)
    with pytest.raises(ValueError, match="targets"):
        guided_backprop(tiny_net, images, torch.tensor([0, 1, 99]))
    with pytest.raises(ValueError, match="targets"):
        grad_cam(tiny_net, images, torch.tensor([0, 1, 99]))
    with pytest.raises(RuntimeError):  # the forward itself fails, hooks in place
        gradcam_and_guided_backprop(tiny_net, torch.randn(2, 5, 32, 32))
    assert _hook_count(tiny_net) == 0
    assert [m.training for m in tiny_net.modules()] == flags
    assert all(a is b for a, b in zip(modules, tiny_net.modules(), strict=True))


def test_hooks_are_inert_for_other_threads(batch) -> None:
    model = _seeded(resnet18)
    images, targets = batch

    def plain_gradient() -> torch.Tensor:
        x = images.clone().requires_grad_(True)
        return torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)[0]

    expected = plain_gradient()
    result: list[torch.Tensor] = []
    with guided_relus(model):
        worker = threading.Thread(target=lambda: result.append(plain_gradient()))
        worker.start()
        worker.join()
    torch.testing.assert_close(result[0], expected)


@pytest.mark.parametrize(
    ("factory", "size"),
    [(resnet18, 64), (densenet121, 64), (mobilenet_v2, 64), (efficientnet_b0, 64)],
    ids=["resnet18", "densenet121", "mobilenet_v2", "efficientnet_b0"],
)
def test_layer_none_finds_the_feature_stage(factory, size: int) -> None:
    torch.manual_seed(0)
    model = factory(num_classes=5).eval()
    images = torch.randn(2, 3, size, size)
    cam = grad_cam(model, images)
    assert cam.shape == (2, size // 32, size // 32)
    assert torch.isfinite(cam).all() and cam.abs().sum() > 0
    gb = guided_backprop(model, images, None)
    assert gb.shape == images.shape and torch.isfinite(gb).all()


def test_densenet_grad_cam_is_taken_before_its_functional_relu() -> None:
    torch.manual_seed(0)
    model = densenet121(num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    captured: list[torch.Tensor] = []
    handle = model.features.register_forward_hook(lambda m, i, o: captured.append(o.clone()))
    try:
        cam = grad_cam(model, images, torch.tensor([0, 1]))
    finally:
        handle.remove()
    assert (captured[0] < 0).any()  # norm5's output has negatives the ReLU would remove
    reference = LayerGradCam(model, model.features).attribute(
        images, target=torch.tensor([0, 1]), relu_attributions=False
    )
    _close(cam, reference.squeeze(1))


# ---------------------------------------------------------------- bad input


def test_images_must_be_4d(tiny_net) -> None:
    with pytest.raises(ValueError, match="images"):
        grad_cam(tiny_net, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="images"):
        guided_backprop(tiny_net, torch.randn(3, 32, 32), None)
    with pytest.raises(ValueError, match="images"):
        integrated_gradients(tiny_net, torch.zeros(1, 3, 8, 8, dtype=torch.int64), None)


def test_layer_must_belong_to_the_model(tiny_net, images) -> None:
    with pytest.raises(LayerNotFoundError, match="not a module"):
        grad_cam(tiny_net, images, layer=nn.Conv2d(3, 3, 1))
    assert _hook_count(tiny_net) == 0


def test_layer_must_be_spatial(tiny_net, images) -> None:
    with pytest.raises(LayerNotFoundError, match="feature map"):
        grad_cam(tiny_net, images, layer=tiny_net.fc)
    assert _hook_count(tiny_net) == 0


def test_model_without_spatial_stage() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(LayerNotFoundError, match="layer="):
        grad_cam(mlp, torch.randn(2, 3, 8, 8))


def test_targets_out_of_range_or_wrong_shape(tiny_net, images) -> None:
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\]"):
        grad_cam(tiny_net, images, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="targets must be an integer tensor of shape"):
        guided_backprop(tiny_net, images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        integrated_gradients(tiny_net, images, torch.tensor([0, 1, 4]), steps=2)


def test_trapezoid_is_the_true_trapezoid_rule() -> None:
    """captum's "riemann_trapezoid" gives every point 1/(n-1) (weights summing to
    n/(n-1)); ours halves the end points, so its weights sum to one."""
    _, weights = quadrature("riemann_trapezoid", 8)
    assert float(weights.sum()) == pytest.approx(1.0)
    assert float(weights[0]) == pytest.approx(0.5 / 7)


def test_quadrature_rules_integrate_polynomials() -> None:
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        alphas, weights = quadrature(rule, 64)
        assert float((weights * alphas**2).sum()) == pytest.approx(1 / 3, rel=1e-3)
    with pytest.raises(ValueError, match="rule"):
        quadrature("simpson", 8)
    with pytest.raises(ValueError, match="steps"):
        quadrature("gausslegendre", 0)


@pytest.mark.gpu
def test_cuda_maps_match_cpu(batch) -> None:
    model = _seeded(resnet18).float()
    images, targets = batch
    images = images.float()
    cpu_cam, cpu_gb, _ = gradcam_and_guided_backprop(model, images, targets)
    cuda_cam, cuda_gb, _ = gradcam_and_guided_backprop(model.cuda(), images.cuda(), targets.cuda())
    torch.testing.assert_close(
        cuda_cam.cpu(), cpu_cam, rtol=1e-3, atol=1e-3 * float(cpu_cam.abs().max())
    )
    torch.testing.assert_close(
        cuda_gb.cpu(), cpu_gb, rtol=1e-3, atol=1e-3 * float(cpu_gb.abs().max())
    )
