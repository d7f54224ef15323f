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
"""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor, nn

from ._exceptions import UnsupportedActivationError
from ._hooks import resolve_layer
from .attention import check_images, grad_cam_with_targets, guided_backprop, integrated_gradients

__all__ = [
    "GB_NORMALIZATIONS",
    "METHODS",
    "SIMILARITIES",
    "atcon_loss",
    "attention_consistency",
    "check_twice_differentiable",
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

_second_order_ok: dict[type[nn.Module], bool] = {}


def _twice_differentiable(module: nn.Module) -> bool:
    """Whether autograd can differentiate ``module``'s backward once more."""
    kind = type(module)
    if kind not in _second_order_ok:
        ok = True
        leaf = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
        try:
            out = module(leaf * 1.0)
            (grad,) = torch.autograd.grad(out.sum(), leaf, create_graph=True)
            if grad.requires_grad:
                torch.autograd.grad(grad.square().sum(), leaf, allow_unused=True)
        except (NotImplementedError, RuntimeError) as exc:
            message = str(exc).lower()  # autograd: "derivative for aten::X is not implemented"
            ok = not ("derivative for" in message and "not implemented" in message)
        except Exception:  # shape or dtype trouble: not an activation we can probe
            ok = True
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


def _consistency_terms(
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
) -> Tensor:
    """Per-image similarity of the two Grad-CAM maps (N,): steps 1 to 6 of the loss."""
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
    mask = soft_mask(saliency, mask_intensity, gb_normalization)
    second, _ = grad_cam_with_targets(
        model, mask.unsqueeze(1) * images, classes, layer=target_layer, create_graph=create_graph
    )
    return map_consistency(first, second, similarity)


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


def atcon_loss(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    mask_intensity: float = 8.0,
    gb_normalization: str = "none",
    similarity: str = "pearson",
    method: str = "guided_backprop",
    ig_steps: int = 16,
) -> Tensor:
    """The ATCON loss (a scalar): minus the mean attention consistency of the batch.

    See the module docstring for the equations. ``images`` is a normalised batch
    (N, C, H, W); put BatchNorm layers in eval mode first, as ATCON fine-tuning does,
    or the batch statistics couple the images' maps. ``ig_steps`` is the number of
    Integrated Gradients steps when ``method="integrated_gradients"``.
    """
    terms = _consistency_terms(
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
    return -terms.mean()


def attention_consistency(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
    *,
    layer: nn.Module | None = None,
    mask_intensity: float = 8.0,
    gb_normalization: str = "none",
    similarity: str = "pearson",
    method: str = "guided_backprop",
    ig_steps: int = 16,
) -> Tensor:
    """Per-image attention consistency (N,), the quantity ATCON maximises; no graph kept."""
    terms = _consistency_terms(
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
    return terms.detach()
