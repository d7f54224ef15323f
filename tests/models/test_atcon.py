"""The ATCON loss: published semantics against a plain per-image reference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models import mobilenet_v3_small, resnet18

from models import UnsupportedActivationError
from models._exceptions import MapTooSmallError, ModelError
from models.atcon import (
    atcon_loss,
    atcon_loss_parts,
    attention_consistency,
    check_map_size,
    check_twice_differentiable,
    constant_rows,
    pearson,
    soft_mask,
)
from models.attention import grad_cam, guided_backprop

MASK_INTENSITY = 8.0


# --------------------------------------------------------------------------------------
# A reference written from the seven steps, one image at a time, sharing no code
# with the library: explicit ResNet stages for Grad-CAM, and a copy of the model whose
# ReLU modules are replaced by a guided ReLU for Guided Backprop (run with the original
# parameters through functional_call, so gradients reach them).


class _GuidedReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class _GuidedReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _GuidedReLUFunction.apply(x)


def _guided_copy(model: nn.Module) -> nn.Module:
    guided = copy.deepcopy(model)
    for module in list(guided.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, _GuidedReLU())
    return guided


def _resnet_features(model: nn.Module, x: Tensor) -> Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _resnet_head(model: nn.Module, features: Tensor) -> Tensor:
    return model.fc(torch.flatten(model.avgpool(features), 1))


def _cam(model: nn.Module, x: Tensor, c: int) -> Tensor:
    features = _resnet_features(model, x)
    logit = _resnet_head(model, features)[0, c]
    (grad,) = torch.autograd.grad(logit, features, create_graph=True)
    return (grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)[0]


def _guided(model: nn.Module, guided: nn.Module, x: Tensor, c: int) -> Tensor:
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    xg = x.detach().clone().requires_grad_(True)
    logit = functional_call(guided, state, (xg,))[0, c]
    (grad,) = torch.autograd.grad(logit, xg, create_graph=True)
    return grad[0]


def _guided_pass_cam(model: nn.Module, guided: nn.Module, x: Tensor, c: int) -> Tensor:
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    captured: list[Tensor] = []
    handle = guided.layer4.register_forward_hook(lambda m, a, o: captured.append(o))
    try:
        logit = functional_call(guided, state, (x,))[0, c]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logit, captured[0], create_graph=True)
    return (grad.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(dim=1)[0]


def _reference_terms(model: nn.Module, images: Tensor, m1_from_guided_pass: bool = False) -> Tensor:
    guided = _guided_copy(model)
    losses = []
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        with torch.no_grad():
            c = int(model(x).argmax(dim=1))  # step 1
        # step 2 (the shortcut under test reads M1 off the guided pass instead)
        m1 = _guided_pass_cam(model, guided, x, c) if m1_from_guided_pass else _cam(model, x, c)
        g = _guided(model, guided, x, c).abs().sum(dim=0)  # step 3
        s = g.mean() + g.std() / 2  # step 4
        mask = torch.sigmoid(MASK_INTENSITY * (g - s))
        m2 = _cam(model, mask * x, c)  # step 5
        a = torch.sigmoid((m1 - m1.mean()) / m1.std()).flatten()  # step 6
        b = torch.sigmoid((m2 - m2.mean()) / m2.std()).flatten()
        ac, bc = a - a.mean(), b - b.mean()
        losses.append(-(ac * bc).sum() / torch.sqrt((ac * ac).sum() * (bc * bc).sum()))
    return torch.stack(losses).mean()  # step 7


def _params(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _grads(loss: Tensor, model: nn.Module) -> list[Tensor]:
    """Every parameter's gradient; zeros where the loss does not depend on it (fc.bias)."""
    params = _params(model)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    pairs = zip(params, grads, strict=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in pairs]


@pytest.fixture(scope="module")
def model_and_batch() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    model = resnet18(num_classes=5).double().eval()
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(3, 3, 96, 96, generator=generator, dtype=torch.float64)
    return model, images


@pytest.fixture(scope="module")
def reference(model_and_batch) -> tuple[Tensor, list[Tensor]]:
    model, images = model_and_batch
    loss = _reference_terms(model, images)
    return loss.detach(), _grads(loss, model)


def _assert_grads_close(actual: list[Tensor], expected: list[Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()) + 1e-12)


def test_published_semantics_value_and_every_gradient(model_and_batch, reference) -> None:
    model, images = model_and_batch
    expected_loss, expected_grads = reference
    loss = atcon_loss(model, images, mask_intensity=MASK_INTENSITY)
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-4, atol=0)
    grads = _grads(loss, model)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    _assert_grads_close(grads, expected_grads)


def test_reference_catches_the_guided_pass_shortcut(model_and_batch, reference) -> None:
    """Reading M1 off the guided pass gives the same value but other gradients; the
    comparison above would fail for such an implementation."""
    model, images = model_and_batch
    expected_loss, expected_grads = reference
    shortcut = _reference_terms(model, images, m1_from_guided_pass=True)
    torch.testing.assert_close(shortcut.detach(), expected_loss, rtol=1e-6, atol=0)
    with pytest.raises(AssertionError):
        _assert_grads_close(_grads(shortcut, model), expected_grads)


def test_consistency_is_minus_the_per_image_loss(model_and_batch, reference) -> None:
    model, images = model_and_batch
    expected_loss, _ = reference
    scores = attention_consistency(model, images, mask_intensity=MASK_INTENSITY)
    assert scores.shape == (3,) and not scores.requires_grad
    torch.testing.assert_close(-scores.mean(), expected_loss, rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    "options",
    [
        {"gb_normalization": "max"},
        {"similarity": "ssim"},
        {"method": "integrated_gradients", "ig_steps": 4},
        {"gb_normalization": "max", "similarity": "ssim", "mask_intensity": 20.0},
    ],
    ids=["max", "ssim", "integrated_gradients", "max-ssim"],
)
def test_variants_give_finite_differentiable_losses(tiny_net, images, options) -> None:
    loss = atcon_loss(tiny_net, images, **options)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert -1.0 - 1e-6 <= float(loss.detach()) <= 1.0 + 1e-6
    grads = torch.autograd.grad(loss, _params(tiny_net), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_max_normalisation_makes_the_mask_mask(model_and_batch) -> None:
    """With raw gradients the published mask sits near 0.5 everywhere; "max" spreads it."""
    saliency = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1e-3
    published = soft_mask(saliency, 8.0, "none")
    normalised = soft_mask(saliency, 8.0, "max")
    assert float((published - 0.5).abs().max()) < 0.01
    assert float(normalised.max() - normalised.min()) > 0.5


def test_pearson_of_identical_and_opposite_maps() -> None:
    a = torch.randn(4, 10)
    torch.testing.assert_close(pearson(a, 2 * a + 1), torch.ones(4))
    torch.testing.assert_close(pearson(a, -a), -torch.ones(4))


def test_activation_without_second_derivative_is_named() -> None:
    """MobileNetV3's squeeze-excitation uses Hardsigmoid, whose backward autograd cannot
    differentiate (Hardswish has a double backward in this torch release)."""
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    (first,) = torch.autograd.grad(nn.Hardsigmoid()(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(first.sum(), x)
    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=3).eval()
    with pytest.raises(UnsupportedActivationError, match="Hardsigmoid"):
        atcon_loss(model, torch.randn(2, 3, 32, 32))
    check_twice_differentiable(resnet18(num_classes=2))  # ReLU nets pass


class _BrokenSquare(torch.autograd.Function):
    """x**2 whose backward fails the way a broken kernel would (not "not implemented")."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class _BrokenActivation(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BrokenSquare.apply(x)


class _PairOnly(nn.Module):
    """A parameter-free module that takes two inputs: the probe cannot judge it."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def test_an_unexpected_probe_failure_raises_instead_of_passing() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), _BrokenActivation())
    with pytest.raises(ModelError, match=r"_BrokenActivation.*illegal memory access"):
        check_twice_differentiable(model)
    # a module the probe tensor does not fit is not an activation: it passes
    check_twice_differentiable(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), _PairOnly()))


def test_bad_options_name_the_argument(tiny_net, images) -> None:
    with pytest.raises(ValueError, match="mask_intensity"):
        atcon_loss(tiny_net, images, mask_intensity=0.0)
    with pytest.raises(ValueError, match="mask_intensity"):
        atcon_loss(tiny_net, images, mask_intensity=-2.0)
    with pytest.raises(ValueError, match="gb_normalization"):
        atcon_loss(tiny_net, images, gb_normalization="l2")
    with pytest.raises(ValueError, match="similarity"):
        atcon_loss(tiny_net, images, similarity="cosine")
    with pytest.raises(ValueError, match="method"):
        atcon_loss(tiny_net, images, method="deconvnet")
    with pytest.raises(ValueError, match="images"):
        atcon_loss(tiny_net, images[0])
    with pytest.raises(ValueError, match="layer"):
        atcon_loss(tiny_net, images, layer=nn.Conv2d(3, 3, 1))


# --------------------------------------------------------------------------------------
# Degenerate cases: a map too small (a precondition, refused up front), a constant map
# and a zero Guided Backprop saliency (per image, dropped from the loss).


def test_one_pixel_maps_are_refused_with_the_layer_the_size_and_the_fix() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=2).train()
    with pytest.raises(MapTooSmallError) as caught:
        check_map_size(model, 32)
    message = str(caught.value)
    assert "'layer4' is 1x1 for 32x32" in message
    assert "--layer layer3" in message and "2x2" in message and "64 px" in message
    assert all(m.training for m in model.modules())  # flags restored after the probe
    assert not model.layer4._forward_hooks  # and no hook left behind
    assert check_map_size(model, 64) == (2, 2)
    assert check_map_size(model, 32, model.layer3) == (2, 2)
    with pytest.raises(MapTooSmallError, match="layer4"):  # not a NaN loss at step 0
        atcon_loss(model.eval(), torch.randn(2, 3, 32, 32))


class _Broadcast(nn.Module):
    """Each channel's spatial mean everywhere: a feature map, hence Grad-CAM, that is flat."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


class _FlatCamNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), _Broadcast())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class _BlindNet(nn.Module):
    """Logits that do not depend on the pixels: Guided Backprop is zero, Grad-CAM is not."""

    def __init__(self) -> None:
        super().__init__()
        self.pattern = nn.Parameter(torch.randn(1, 4, 4, 4))
        self.features = nn.Identity()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        maps = self.features(self.pattern.expand(x.shape[0], -1, -1, -1) + 0.0 * x[:, :1, :4, :4])
        return self.fc(maps.relu().mean(dim=(2, 3)))


def _finite_grads(loss: Tensor, model: nn.Module) -> list[Tensor]:
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    present = [g for g in grads if g is not None]
    assert all(bool(torch.isfinite(g).all()) for g in present)
    return present


def test_constant_gradcam_maps_are_dropped_not_exploded() -> None:
    torch.manual_seed(0)
    model = _FlatCamNet().eval()
    images = torch.randn(3, 3, 8, 8)
    parts = atcon_loss_parts(model, images)
    assert parts.dropped.tolist() == [True, True, True] and parts.kept == 0
    assert float(parts.loss.detach()) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in _finite_grads(parts.loss, model))
    assert attention_consistency(model, images).tolist() == [0.0, 0.0, 0.0]  # scored 0


def test_a_dead_image_is_left_out_of_the_batch_mean(tiny_net, images) -> None:
    """An image whose first activations are all cut by a ReLU has a flat Grad-CAM map (the
    later biases only) and a zero Guided Backprop saliency; the others' loss ignores it."""
    dead = torch.full((1, 3, 32, 32), -1e4)  # every first-layer output is far below zero
    first_conv = tiny_net.features[0]
    with torch.no_grad():
        first_conv.weight.abs_()
        first_conv.bias.zero_()
    assert bool(constant_rows(grad_cam(tiny_net, dead)).all())
    parts = atcon_loss_parts(tiny_net, torch.cat([images, dead]))
    assert parts.dropped.tolist() == [False, False, False, True]
    alone = atcon_loss(tiny_net, images)
    torch.testing.assert_close(parts.loss, alone)
    for mixed, clean in zip(
        _finite_grads(parts.loss, tiny_net), _finite_grads(alone, tiny_net), strict=True
    ):
        torch.testing.assert_close(mixed, clean)


def test_a_zero_guided_backprop_saliency_is_dropped() -> None:
    """Zero saliency makes the mask uniform, T = sigmoid(0) = 1/2: M2 would be the map of
    a dimmed image, a comparison without Guided Backprop in it."""
    torch.manual_seed(0)
    model = _BlindNet().eval()
    images = torch.randn(2, 3, 8, 8)
    saliency = guided_backprop(model, images, None)
    assert float(saliency.abs().max()) == 0.0
    assert float(grad_cam(model, images).std()) > 0  # Grad-CAM itself is not flat
    torch.testing.assert_close(soft_mask(saliency, 8.0), torch.full((2, 8, 8), 0.5))
    parts = atcon_loss_parts(model, images)
    assert parts.dropped.tolist() == [True, True]
    assert float(parts.loss.detach()) == 0.0
    _finite_grads(parts.loss, model)


def test_constant_rows_sees_flat_rows_but_not_nan() -> None:
    rows = torch.tensor([[0.0, 0.0], [3.0, 3.0 + 1e-9], [1.0, 2.0], [float("nan"), 1.0]])
    assert constant_rows(rows).tolist() == [True, True, False, False]
