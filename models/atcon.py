r"""The ATCON attention-consistency loss.

Mirzazadeh et al., "ATCON: Attention Consistency for Vision Models", WACV 2023.
ATCON asks two attention methods to agree on unlabeled images: the Grad-CAM map of
an image and the Grad-CAM map of the same image softly masked by its Guided
Backpropagation map. With the published settings (``gb_normalization="none"``,
``similarity="pearson"``, ``method="guided_backprop"``), for a batch ``x``:

1. :math:`c_i = \arg\max_k f_k(x_i)` (no gradient through the choice);
2. :math:`M^1 = \mathrm{GradCAM}(x, c)` at the layer's resolution;
3. :math:`G = \mathrm{GuidedBackprop}(x, c)`, :math:`g = \sum_{channels} |G|`;
4. :math:`T = \sigma\big(w (g - s)\big)`, :math:`s = \mathrm{mean}(g) + \mathrm{std}(g)/2`
   per image (unbiased std), :math:`w` the mask intensity;
5. :math:`M^2 = \mathrm{GradCAM}(T \odot x, c)`;
6. :math:`\ell_i = -\rho\big(\sigma(z(M^1_i)), \sigma(z(M^2_i))\big)` with
   :math:`z(M) = (M - \mathrm{mean}\,M) / \mathrm{std}\,M` (unbiased) and
   :math:`\rho` Pearson's correlation;
7. :math:`\mathcal{L} = \frac{1}{N} \sum_i \ell_i`.

Every step keeps its autograd graph, so :math:`\mathcal{L}` is differentiable with
respect to the parameters through both Grad-CAM maps and through the mask, whose
derivative passes through the guided ReLU rule. :math:`M^1` and :math:`M^2` come
from ordinary forward passes; reading :math:`M^1` off the guided pass would give
the same value but different parameter gradients.

Options beyond the published code: ``gb_normalization="max"`` divides ``g`` by its
per-image maximum before the threshold (raw gradients are tiny, so the published
mask is about 0.5 everywhere); ``similarity="ssim"`` compares the two maps with a
global structural similarity instead; ``method="integrated_gradients"`` uses
Integrated Gradients in place of Guided Backprop (the paper's ablation).

Degenerate cases, and where each is caught:

- **A map of fewer than** :data:`MIN_MAP_PIXELS` **pixels** (a ResNet's ``layer4`` is
  1x1 at 32 px input): a precondition. :math:`z(M)` of one pixel divides by an
  unbiased std of one value, 0/0, so the loss is NaN at step 0; with two pixels
  :math:`\rho = \pm 1` whatever the maps, so the loss has no gradient. It depends only
  on the model, the layer and the input size, so fine-tuning checks it before the
  first step (:func:`check_map_size`, :class:`MapTooSmallError` naming the layer,
  the size and the fix); :func:`atcon_loss` refuses such maps too.
- **A constant map** (an all-zero Grad-CAM: a dead layer, or a class whose logit
  does not depend on the layer): per image, data dependent, so detected per batch.
  :math:`\mathrm{std}\,M = 0` and :math:`\rho` is 0/0; the clamped denominators
  turn that into a gradient of order :math:`1/\epsilon^2`, which wrecks the
  weights in one step. Such images are dropped from the loss (the mean is over
  the rest; :class:`AtconLossParts` counts them).
- **A zero (or constant) Guided Backprop saliency** :math:`g`: then
  :math:`T = \sigma(0) = \tfrac12` everywhere, :math:`M^2` is the map of a uniformly
  dimmed image and the term compares nothing Guided Backprop saw. Detected per
  image and dropped from the loss in the same way.

:func:`attention_consistency` (scores for display and the gate) keeps every image:
a constant map scores 0 there, by the same clamped denominators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import Tensor, nn

from ._exceptions import (
    LayerNotFoundError,
    MapTooSmallError,
    ModelError,
    UnsupportedActivationError,
)
from ._hooks import resolve_layer
from .attention import check_images, grad_cam_with_targets, guided_backprop, integrated_gradients

__all__ = [
    "GB_NORMALIZATIONS",
    "METHODS",
    "MIN_MAP_PIXELS",
    "SIMILARITIES",
    "AtconLossParts",
    "atcon_loss",
    "atcon_loss_parts",
    "attention_consistency",
    "check_map_size",
    "check_twice_differentiable",
    "constant_rows",
    "feature_map_sizes",
    "map_consistency",
    "pearson",
    "soft_mask",
]

GB_NORMALIZATIONS: Final = ("none", "max")
SIMILARITIES: Final = ("pearson", "ssim")
METHODS: Final = ("guided_backprop", "integrated_gradients")
_EPS = 1e-12
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2
#: fewest pixels a Grad-CAM map needs: with 1 the correlation is 0/0, with 2 it is ±1
MIN_MAP_PIXELS: Final = 3
#: the soft mask's sharpness w in sigmoid(w (g - s)) (:func:`soft_mask`): the paper's 8.0
MASK_INTENSITY: Final = 8.0
#: a map whose spread (max - min) is at most this fraction of its largest magnitude is constant
_CONSTANT_RTOL = 1e-6

_second_order_ok: dict[type[nn.Module], bool] = {}


def _twice_differentiable(module: nn.Module) -> bool:
    """Whether autograd can differentiate ``module``'s backward once more.

    The probe is a tiny float64 tensor (1, 2, 4, 4). A module that refuses it in its
    forward (another shape, dtype or arity) is no activation this probe can judge and
    counts as fine. In the backward passes, autograd's "derivative for ... is not
    implemented" means no; any other failure is unexpected and raises
    :class:`ModelError` naming the module, rather than passing as "fine".
    """
    kind = type(module)
    if kind not in _second_order_ok:
        leaf = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
        try:
            out = module(leaf * 1.0)
        except (RuntimeError, TypeError, ValueError, IndexError):
            _second_order_ok[kind] = True  # the probe does not fit this module: not an activation
            return True
        ok = True
        try:
            if isinstance(out, Tensor) and out.requires_grad:
                (grad,) = torch.autograd.grad(out.sum(), leaf, create_graph=True)
                if grad.requires_grad:
                    torch.autograd.grad(grad.square().sum(), leaf, allow_unused=True)
        except (NotImplementedError, RuntimeError) as exc:
            message = str(exc).lower()  # autograd: "derivative for aten::X is not implemented"
            if isinstance(exc, NotImplementedError) or (
                "derivative for" in message and "not implemented" in message
            ):
                ok = False
            else:
                raise ModelError(
                    f"probing {kind.__name__} for a second derivative failed unexpectedly: {exc}"
                ) from exc
        _second_order_ok[kind] = ok
    return _second_order_ok[kind]


def check_twice_differentiable(model: nn.Module) -> None:
    """Raise :class:`UnsupportedActivationError` naming any activation ATCON cannot use.

    The ATCON loss differentiates attention maps, which are themselves gradients, so
    every operation needs a second derivative. Autograd lacks one for some
    activations (Hardsigmoid, in MobileNetV3's squeeze-excitation blocks, for one).
    Parameter-free leaf modules are probed once per type on a tiny tensor.
    """
    bad = sorted(
        {
            type(module).__name__
            for module in model.modules()
            if not list(module.children())
            and not list(module.parameters(recurse=False))
            and not _twice_differentiable(module)
        }
    )
    if bad:
        raise UnsupportedActivationError(
            f"{type(model).__name__} uses {', '.join(bad)}, whose second derivative autograd "
            "does not implement, so the ATCON loss cannot be differentiated; choose "
            "an architecture without it (ResNet, DenseNet, MobileNetV2, EfficientNet)"
        )


def _check_option(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def constant_rows(values: Tensor) -> Tensor:
    r"""Which rows of ``values`` (N, ...) are constant: (N,) bool, no gradient.

    A row is constant when :math:`\max - \min \le 10^{-6} \max |v|` (an all-zero row
    is constant). A row holding NaN is not: a NaN must stop training, not vanish.
    """
    flat = values.detach().flatten(1)
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    return spread <= _CONSTANT_RTOL * flat.abs().amax(dim=1)


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is layer:
            return name or type(model).__name__
    return type(layer).__name__


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def feature_map_sizes(
    model: nn.Module, input_size: int | tuple[int, int], *, channels: int = 3
) -> dict[str, tuple[int, int]]:
    """Spatial size (h, w) of every module's 4-D output for one zero image, in call order.

    One forward pass in eval mode without gradients; the model's train/eval flags and
    hooks are restored afterwards. A module called twice keeps its first size.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height < 1 or width < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    sizes: dict[str, tuple[int, int]] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Any) -> None:
            if isinstance(output, Tensor) and output.dim() == 4 and name not in sizes:
                sizes[name] = (int(output.shape[2]), int(output.shape[3]))

        return hook

    flags = {module: module.training for module in model.modules()}
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(record(name)))
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags.items():
            module.training = training
    return sizes


def check_map_size(
    model: nn.Module,
    input_size: int | tuple[int, int],
    layer: nn.Module | None = None,
    *,
    channels: int = 3,
) -> tuple[int, int]:
    r"""The Grad-CAM map size (h, w) at ``layer`` for this input size; refuse one too small.

    ATCON correlates the two maps pixel by pixel: with :math:`hw = 1` the standardised
    map :math:`z(M)` is 0/0 and the loss NaN; with :math:`hw = 2`, :math:`\rho = \pm 1`
    for any maps and the loss has no gradient. So :math:`hw \ge` :data:`MIN_MAP_PIXELS`
    is required, and :class:`MapTooSmallError` names the layer, the size, an earlier
    layer that is large enough (a sibling run before it, or one of its children) and
    the smallest input size that would do. ``layer=None``: the automatic layer.
    """
    target = resolve_layer(model, layer)
    name = _layer_name(model, target)
    sizes = feature_map_sizes(model, input_size, channels=channels)
    if name not in sizes:
        raise LayerNotFoundError(
            f"layer {name!r} gives no (N, C, h, w) feature map, so it has no Grad-CAM map"
        )
    height, width = sizes[name]
    if height * width >= MIN_MAP_PIXELS:
        return height, width
    in_h, in_w = (input_size, input_size) if isinstance(input_size, int) else input_size
    earlier = None
    for candidate, (h, w) in sizes.items():  # call order: everything run before `name`
        if candidate == name:
            break
        related = _parent(candidate) == _parent(name) or _parent(candidate) == name
        if related and h * w >= MIN_MAP_PIXELS:
            earlier = (candidate, h, w)
    side = math.ceil(math.sqrt(MIN_MAP_PIXELS))
    larger = math.ceil(max(in_h, in_w) * side / max(1, min(height, width)))
    if earlier is not None:
        other, h, w = earlier
        fix = (
            f"use an earlier layer ({other!r} gives {h}x{w} maps here: `--layer {other}` "
            f'on the command line, "layer": "{other}" in a fine-tune request) or a model '
            f"trained at an input size of {larger} px or more"
        )
    else:
        fix = f"use an earlier layer or a model trained at an input size of {larger} px or more"
    raise MapTooSmallError(
        f"the Grad-CAM map of layer {name!r} is {height}x{width} for {in_h}x{in_w} input "
        f"images; ATCON correlates maps pixel by pixel and needs at least {MIN_MAP_PIXELS} "
        "pixels (the correlation of one-pixel maps is undefined, so the loss would be NaN "
        f"whatever the learning rate). {fix[0].upper()}{fix[1:]}."
    )


def soft_mask(saliency: Tensor, mask_intensity: float, gb_normalization: str = "none") -> Tensor:
    r"""The soft mask :math:`T = \sigma(w (g - s))` from input-space saliency (N, C, H, W).

    ``g`` is the channel sum of ``|saliency|``, optionally divided by its per-image
    maximum; ``s`` is its per-image mean plus half its unbiased standard deviation.
    Returns (N, H, W).
    """
    if mask_intensity <= 0:
        raise ValueError(f"mask_intensity must be positive, got {mask_intensity}")
    _check_option("gb_normalization", gb_normalization, GB_NORMALIZATIONS)
    g = saliency.abs().sum(dim=1)
    if gb_normalization == "max":
        g = g / g.amax(dim=(1, 2), keepdim=True).clamp_min(_EPS)
    flat = g.flatten(1)
    threshold = flat.mean(dim=1) + flat.std(dim=1) / 2
    return torch.sigmoid(mask_intensity * (g - threshold.view(-1, 1, 1)))


def _standardize(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    return (flat - flat.mean(dim=1, keepdim=True)) / flat.std(dim=1, keepdim=True).clamp_min(_EPS)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    r"""Pearson correlation of each row of ``a`` with the same row of ``b`` (N, D) -> (N,)."""
    ac = a - a.mean(dim=1, keepdim=True)
    bc = b - b.mean(dim=1, keepdim=True)
    denominator = (ac.square().sum(dim=1) * bc.square().sum(dim=1)).clamp_min(_EPS).sqrt()
    return (ac * bc).sum(dim=1) / denominator


def _global_ssim(a: Tensor, b: Tensor) -> Tensor:
    r"""Structural similarity of whole maps (one window per map), (N, D) -> (N,).

    .. math::  \mathrm{SSIM}(a, b) = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
               {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}

    with :math:`C_1 = 0.01^2`, :math:`C_2 = 0.03^2` for maps in [0, 1].
    """
    mu_a, mu_b = a.mean(dim=1), b.mean(dim=1)
    var_a, var_b = a.var(dim=1), b.var(dim=1)
    cov = ((a - mu_a[:, None]) * (b - mu_b[:, None])).sum(dim=1) / (a.shape[1] - 1)
    numerator = (2 * mu_a * mu_b + _SSIM_C1) * (2 * cov + _SSIM_C2)
    return numerator / ((mu_a.square() + mu_b.square() + _SSIM_C1) * (var_a + var_b + _SSIM_C2))


def _attention_pair(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    *,
    layer: nn.Module | None,
    mask_intensity: float,
    gb_normalization: str,
    similarity: str,
    method: str,
    ig_steps: int,
    create_graph: bool,
) -> tuple[Tensor, Tensor, Tensor, nn.Module]:
    """Steps 1 to 5: :math:`M^1`, :math:`M^2`, which images had a constant saliency, the layer."""
    check_images(images)
    if mask_intensity <= 0:
        raise ValueError(f"mask_intensity must be positive, got {mask_intensity}")
    _check_option("gb_normalization", gb_normalization, GB_NORMALIZATIONS)
    _check_option("similarity", similarity, SIMILARITIES)
    _check_option("method", method, METHODS)
    target_layer = resolve_layer(model, layer)
    if create_graph:
        check_twice_differentiable(model)

    first, classes = grad_cam_with_targets(
        model, images, targets, layer=target_layer, create_graph=create_graph
    )
    if method == "guided_backprop":
        saliency = guided_backprop(model, images, classes, create_graph=create_graph)
    else:
        saliency = integrated_gradients(
            model, images, classes, steps=ig_steps, create_graph=create_graph
        )
    flat_saliency = constant_rows(saliency.abs().sum(dim=1))
    mask = soft_mask(saliency, mask_intensity, gb_normalization)
    second, _ = grad_cam_with_targets(
        model, mask.unsqueeze(1) * images, classes, layer=target_layer, create_graph=create_graph
    )
    return first, second, flat_saliency, target_layer


def map_consistency(first: Tensor, second: Tensor, similarity: str = "pearson") -> Tensor:
    r"""Step 6 on given maps: similarity of :math:`\sigma(z(M^1_i))` and :math:`\sigma(z(M^2_i))`.

    ``first`` and ``second`` are Grad-CAM maps (N, h, w) of the images and of the
    masked images; returns (N,). Lets inference that already holds :math:`M^1` and
    the mask score consistency with one more Grad-CAM pass instead of three.
    """
    _check_option("similarity", similarity, SIMILARITIES)
    a = torch.sigmoid(_standardize(first))
    b = torch.sigmoid(_standardize(second))
    return pearson(a, b) if similarity == "pearson" else _global_ssim(a, b)


@dataclass(frozen=True)
class AtconLossParts:
    """The ATCON loss of a batch and the images left out of it (see the module docstring)."""

    #: scalar, differentiable: minus the mean consistency of the images kept
    loss: Tensor
    #: (N,) bool: the image's Grad-CAM map or Guided Backprop saliency was constant
    dropped: Tensor

    @property
    def kept(self) -> int:
        return int((~self.dropped).sum())


def atcon_loss_parts(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    mask_intensity: float = MASK_INTENSITY,
    gb_normalization: str = "none",
    similarity: str = "pearson",
    method: str = "guided_backprop",
    ig_steps: int = 16,
) -> AtconLossParts:
    r""":func:`atcon_loss` with the images it dropped.

    .. math::  \mathcal{L} = -\frac{1}{|K|} \sum_{i \in K} \rho_i, \qquad
               K = \{i : M^1_i, M^2_i, g_i \text{ not constant}\}

    When :math:`K` is empty the loss is a zero that still belongs to the graph (its
    gradient is zero), so a training step goes on. Maps of fewer than
    :data:`MIN_MAP_PIXELS` pixels raise :class:`MapTooSmallError`.
    """
    first, second, flat_saliency, target_layer = _attention_pair(
        model,
        images,
        None,
        layer=layer,
        mask_intensity=mask_intensity,
        gb_normalization=gb_normalization,
        similarity=similarity,
        method=method,
        ig_steps=ig_steps,
        create_graph=True,
    )
    if first.shape[1] * first.shape[2] < MIN_MAP_PIXELS:
        check_map_size(model, (images.shape[2], images.shape[3]), target_layer)
    dropped = constant_rows(first) | constant_rows(second) | flat_saliency
    keep = ~dropped
    if not bool(keep.any()):
        return AtconLossParts(loss=(first.sum() + second.sum()) * 0.0, dropped=dropped)
    terms = map_consistency(first[keep], second[keep], similarity)
    return AtconLossParts(loss=-terms.mean(), dropped=dropped)


def atcon_loss(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    mask_intensity: float = MASK_INTENSITY,
    gb_normalization: str = "none",
    similarity: str = "pearson",
    method: str = "guided_backprop",
    ig_steps: int = 16,
) -> Tensor:
    """The ATCON loss (a scalar): minus the mean attention consistency of the batch.

    See the module docstring for the equations and for the degenerate images left
    out of the mean (:func:`atcon_loss_parts` says which). ``images`` is a normalised
    batch (N, C, H, W); put BatchNorm layers in eval mode first, as ATCON fine-tuning
    does, or the batch statistics couple the images' maps. ``ig_steps`` is the number
    of Integrated Gradients steps when ``method="integrated_gradients"``.
    """
    return atcon_loss_parts(
        model,
        images,
        layer=layer,
        mask_intensity=mask_intensity,
        gb_normalization=gb_normalization,
        similarity=similarity,
        method=method,
        ig_steps=ig_steps,
    ).loss


def attention_consistency(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
    *,
    layer: nn.Module | None = None,
    mask_intensity: float = MASK_INTENSITY,
    gb_normalization: str = "none",
    similarity: str = "pearson",
    method: str = "guided_backprop",
    ig_steps: int = 16,
) -> Tensor:
    """Per-image attention consistency (N,), the quantity ATCON maximises; no graph kept."""
    first, second, _, _ = _attention_pair(
        model,
        images,
        targets,
        layer=layer,
        mask_intensity=mask_intensity,
        gb_normalization=gb_normalization,
        similarity=similarity,
        method=method,
        ig_steps=ig_steps,
        create_graph=False,
    )
    return map_consistency(first, second, similarity).detach()
