"""Private hook plumbing for the attention methods.

Every context manager here registers its hooks on entry and removes them in a
``finally`` on exit, so a model is left exactly as it was (same modules, no hooks,
same train/eval flags) also when the body raises. Hooks act only in the thread that
registered them: another thread running the same model meanwhile sees them fire as
no-ops. They still appear in that model's hook dictionaries while the call runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ._exceptions import LayerNotFoundError

__all__ = [
    "GUIDED_ACTIVATIONS",
    "LayerCapture",
    "capture_layer",
    "find_target_layer",
    "guided_relus",
    "resolve_layer",
]

#: Activation modules whose backward pass Guided Backpropagation rewrites.
GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


def find_target_layer(model: nn.Module) -> nn.Module:
    """The last spatial feature stage of a torchvision classifier.

    ResNet: ``layer4``; DenseNet, MobileNet, EfficientNet, VGG and anything else with a
    ``features`` module: ``features``. Other models must pass the layer explicitly.
    """
    for name in ("layer4", "features"):
        candidate = getattr(model, name, None)
        if isinstance(candidate, nn.Module):
            return candidate
    raise LayerNotFoundError(
        f"could not find a spatial feature stage in {type(model).__name__} "
        "(looked for `layer4` and `features`); pass layer=<module of the model>"
    )


def resolve_layer(model: nn.Module, layer: nn.Module | None) -> nn.Module:
    """Check ``layer`` belongs to ``model`` (or find one when it is ``None``)."""
    if layer is None:
        return find_target_layer(model)
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module of the model, got {type(layer).__name__}")
    if not any(module is layer for module in model.modules()):
        raise LayerNotFoundError(
            f"layer {type(layer).__name__} is not a module of {type(model).__name__}"
        )
    return layer


class _GuidedGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through.

    Placed on the output of a ReLU, whose own backward then zeroes the gradient at
    non-positive inputs, the gradient reaching the ReLU's input is
    ``1[x > 0] * max(g, 0)``: the Guided Backpropagation rule. The backward is made of
    differentiable operations, so ``create_graph=True`` keeps the guided rule inside
    the graph of the map's derivative as well.
    """

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


@dataclass
class GuidedTrace:
    """What the guided forward pass saw: how many guided activations ran after ``marker``."""

    after_marker: int = 0
    marker_seen: bool = False


@contextmanager
def guided_relus(model: nn.Module, marker: nn.Module | None = None) -> Iterator[GuidedTrace]:
    """Make every ReLU of ``model`` pass back only positive gradients, for this thread.

    Works with shared ReLU modules (a forward hook fires at every call) and in-place
    ReLUs (the hook wraps the output, never the ReLU's own computation). When
    ``marker`` is given, the trace counts guided activations that ran after it, which
    tells whether the gradient at ``marker``'s output is still the ordinary one.
    Functional ``F.relu`` calls inside a ``forward`` are not modules and stay ordinary.
    """
    owner = threading.get_ident()
    trace = GuidedTrace()
    handles = []

    def guide(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if threading.get_ident() != owner:
            return None
        if trace.marker_seen:
            trace.after_marker += 1
        guided: Tensor = _GuidedGradient.apply(output)
        return guided

    def mark(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if threading.get_ident() == owner:
            trace.marker_seen = True

    try:
        for module in model.modules():
            if isinstance(module, GUIDED_ACTIVATIONS):
                handles.append(module.register_forward_hook(guide))
        if marker is not None:
            handles.append(marker.register_forward_hook(mark))
        yield trace
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class LayerCapture:
    """The activations a target layer produced during one forward pass."""

    outputs: list[Tensor] = field(default_factory=list)

    @property
    def activations(self) -> Tensor:
        if not self.outputs:
            raise LayerNotFoundError("the target layer did not run during the forward pass")
        return self.outputs[-1]


@contextmanager
def capture_layer(layer: nn.Module) -> Iterator[LayerCapture]:
    """Record ``layer``'s output (N, K, h, w) so gradients can be taken with respect to it.

    The hook hands a copy downstream, so an in-place operation after the layer
    (DenseNet's ``F.relu(features, inplace=True)``) cannot change the captured map.
    When nothing upstream requires a gradient, the captured tensor is made a leaf that
    does, so Grad-CAM also works on a frozen model.
    """
    owner = threading.get_ident()
    capture = LayerCapture()

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if threading.get_ident() != owner:
            return None
        if not isinstance(output, Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise LayerNotFoundError(
                f"layer {type(module).__name__} produced {shape}, not a (N, K, h, w) feature "
                "map; pass a spatial layer"
            )
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        capture.outputs.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
