"""Attention maps: Grad-CAM, Guided Backpropagation and Integrated Gradients.

All three are batched (one call, N images, no Python loop over images) and
optionally differentiable with respect to the model's parameters
(``create_graph=True``), which is what the ATCON loss needs. Every call leaves the
model exactly as it found it: hooks are removed in ``finally`` blocks and no module
or train/eval flag is changed.

Thread safety: the calls register forward hooks on the model for their duration.
The hooks act only in the calling thread, so another thread running the same model
at the same time gets ordinary outputs, but it will see the hooks listed on the
modules. BatchNorm in training mode couples the images of a batch; compute maps in
eval mode (as ATCON fine-tuning does, with BatchNorm frozen) for per-image maps.

Targets are class indices into the model's output (its logits); ``None`` means each
image's top class, chosen in the same forward pass and carrying no gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ._hooks import capture_layer, guided_relus, resolve_layer

__all__ = [
    "IG_RULES",
    "grad_cam",
    "grad_cam_with_targets",
    "gradcam_and_guided_backprop",
    "guided_backprop",
    "integrated_gradients",
    "quadrature",
]

IG_RULES: tuple[str, ...] = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)


def check_images(images: object) -> Tensor:
    """Return ``images`` if it is a floating (N, C, H, W) tensor; raise ``ValueError`` otherwise."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(
            f"images must be a 4-D (N, C, H, W) batch, got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image")
    return images


def _resolve_targets(targets: Tensor | None, logits: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise ValueError(f"the model must return (N, classes) logits, got {tuple(logits.shape)}")
    n, num_classes = logits.shape
    if targets is None:
        return logits.detach().argmax(dim=1)
    if not isinstance(targets, Tensor):
        raise TypeError(
            f"targets must be a LongTensor of class indices, got {type(targets).__name__}"
        )
    if targets.dtype not in (torch.int64, torch.int32) or targets.shape != (n,):
        raise ValueError(
            f"targets must be an integer tensor of shape ({n},), got {targets.dtype} "
            f"{tuple(targets.shape)}"
        )
    if bool(((targets < 0) | (targets >= num_classes)).any()):
        raise ValueError(
            f"targets must lie in [0, {num_classes - 1}] for a model with {num_classes} "
            f"classes, got values {targets.unique().tolist()}"
        )
    return targets.to(device=logits.device, dtype=torch.int64)


def _class_score(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over the batch of each image's target logit: its gradient is per image."""
    return logits.gather(1, targets[:, None]).sum()


def _cam_from(activations: Tensor, gradients: Tensor) -> Tensor:
    """``sum_k w_k A_k`` with ``w_k`` the spatial mean of ``dy_c / dA_k``."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


def grad_cam_with_targets(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
    *,
    layer: nn.Module | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`grad_cam`, also returning the targets it used (the top classes when ``None``)."""
    check_images(images)
    target_layer = resolve_layer(model, layer)
    with torch.enable_grad(), capture_layer(target_layer) as capture:
        logits = model(images)
        classes = _resolve_targets(targets, logits)
        activations = capture.activations
        (gradients,) = torch.autograd.grad(
            _class_score(logits, classes), activations, create_graph=create_graph
        )
    if create_graph:
        return _cam_from(activations, gradients), classes
    with torch.no_grad():
        return _cam_from(activations.detach(), gradients), classes


def grad_cam(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
    *,
    layer: nn.Module | None = None,
    create_graph: bool = False,
) -> Tensor:
    r"""Raw Grad-CAM maps (N, h, w) at ``layer``'s resolution (Selvaraju et al., ICCV 2017).

    .. math::  M_c = \sum_k w_k^c A_k, \qquad
               w_k^c = \frac{1}{hw} \sum_{i,j} \frac{\partial y_c}{\partial A_k^{ij}}

    where ``A`` (N, K, h, w) is the layer's output and ``y_c`` the logit of the
    target class. No ReLU, upsampling or normalisation is applied (see
    :mod:`models.maps`). The gradient stops at the layer: one forward pass and a
    short backward. With ``create_graph=True`` the map is differentiable with respect
    to the parameters and to ``images``.
    """
    cam, _ = grad_cam_with_targets(model, images, targets, layer=layer, create_graph=create_graph)
    return cam


def _input_leaf(images: Tensor) -> Tensor:
    return images if images.requires_grad else images.detach().requires_grad_(True)


def guided_backprop(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    *,
    create_graph: bool = False,
) -> Tensor:
    r"""Guided Backpropagation maps (N, C, H, W) (Springenberg et al., ICLR 2015 workshop).

    ``dy_c / dx`` computed with every ReLU module passing back only positive
    gradients at positive inputs:
    :math:`\partial_{in} = 1[x > 0] \cdot \max(\partial_{out}, 0)`.

    Shared ReLU modules (torchvision's ResNet blocks call one ReLU two or three
    times) and in-place ReLUs are handled: the rule is attached to every call's
    output by a forward hook, never by replacing or mutating modules. With
    ``create_graph=True`` the map is differentiable with respect to the parameters
    and its derivative passes through the guided rule too. Functional ``F.relu``
    calls (DenseNet's last one) are not modules and keep the ordinary rule.
    """
    check_images(images)
    x = _input_leaf(images)
    with torch.enable_grad(), guided_relus(model):
        logits = model(x)
        classes = _resolve_targets(targets, logits)
        (grads,) = torch.autograd.grad(_class_score(logits, classes), x, create_graph=create_graph)
    return grads if create_graph else grads.detach()


def gradcam_and_guided_backprop(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
    *,
    layer: nn.Module | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM (N, h, w), Guided Backprop (N, C, H, W) and the targets, for inference.

    Where no guided ReLU module runs between ``layer`` and the logits (ResNet's
    ``layer4`` is followed only by pooling and the linear head), ``dy_c / dA`` in the
    guided pass equals the ordinary one, so one guided forward and one backward give
    both maps exactly. Otherwise the Grad-CAM map is recomputed with an ordinary pass.
    No graph is kept: these maps are for display and scoring, not for training.
    """
    check_images(images)
    target_layer = resolve_layer(model, layer)
    x = _input_leaf(images)
    with torch.enable_grad(), capture_layer(target_layer) as capture:
        with guided_relus(model, marker=target_layer) as trace:
            logits = model(x)
        classes = _resolve_targets(targets, logits)
        activations = capture.activations
        grad_a, grad_x = torch.autograd.grad(_class_score(logits, classes), (activations, x))
    if trace.after_marker == 0:
        with torch.no_grad():
            cam = _cam_from(activations.detach(), grad_a)
    else:
        cam = grad_cam(model, images, classes, layer=target_layer)
    return cam, grad_x.detach(), classes


def quadrature(rule: str, steps: int) -> tuple[Tensor, Tensor]:
    r"""Points ``alpha_s`` in [0, 1] and weights ``w_s`` of an integration rule.

    :math:`\int_0^1 f(\alpha)\, d\alpha \approx \sum_s w_s f(\alpha_s)`.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if rule == "gausslegendre":
        nodes, gauss_weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * gauss_weights)
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("steps must be at least 2 for riemann_trapezoid")
        alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
        return alphas, weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise ValueError(f"rule must be one of {', '.join(IG_RULES)}; got {rule!r}")
    alphas = (torch.arange(steps, dtype=torch.float64) + offsets[rule]) / steps
    return alphas, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    *,
    baseline: Tensor | None = None,
    steps: int = 32,
    create_graph: bool = False,
    rule: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> Tensor:
    r"""Integrated Gradients (N, C, H, W) (Sundararajan et al., ICML 2017).

    .. math::  IG(x) = (x - b) \odot \int_0^1
               \frac{\partial y_c}{\partial x}\big(b + \alpha (x - b)\big)\, d\alpha
               \approx (x - b) \odot \sum_s w_s \, \nabla y_c(b + \alpha_s (x - b))

    with the points and weights of ``rule`` (:func:`quadrature`). ``baseline``
    defaults to zeros and may be any tensor broadcastable to ``images``. All
    ``steps x N`` interpolated images go through the model together, in chunks of
    ``internal_batch_size`` when it is set. Completeness: the attributions of an
    image sum to about ``y_c(x) - y_c(b)``.
    """
    check_images(images)
    if internal_batch_size is not None and internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be positive, got {internal_batch_size}")
    alphas, weights = quadrature(rule, steps)
    alphas = alphas.to(device=images.device, dtype=images.dtype)
    weights = weights.to(device=images.device, dtype=images.dtype)
    base = torch.zeros_like(images) if baseline is None else baseline.to(images).expand_as(images)
    delta = images - base
    n = images.shape[0]
    with torch.no_grad():
        logits = model(images)
    classes = _resolve_targets(targets, logits)
    path = base.unsqueeze(0) + alphas.view(-1, 1, 1, 1, 1) * delta.unsqueeze(0)
    path = path.reshape(steps * n, *images.shape[1:])
    path_targets = classes.repeat(steps)
    chunk = internal_batch_size or path.shape[0]
    grads = []
    with torch.enable_grad():
        for start in range(0, path.shape[0], chunk):
            piece = path[start : start + chunk]
            piece = piece if piece.requires_grad else piece.detach().requires_grad_(True)
            logits = model(piece)
            (grad,) = torch.autograd.grad(
                _class_score(logits, path_targets[start : start + chunk]),
                piece,
                create_graph=create_graph,
            )
            grads.append(grad)
    path_grads = torch.cat(grads).view(steps, n, *images.shape[1:])
    average = (weights.view(-1, 1, 1, 1, 1) * path_grads).sum(dim=0)
    attributions = delta * average
    return attributions if create_graph else attributions.detach()
