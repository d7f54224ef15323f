"""The names of adaptation methods: a ``+``-joined set of components (no torch here).

:mod:`models.adaptation` documents what each component does. ``atcon`` alone names the
ATCON fine-tuning schedules of :mod:`models.finetune`, as published (in a combination,
the same schedule: after ``adabn``, alternating with the labels of ``supervised``); ``none`` is no
adaptation. The request schemas of the service validate method names with
:func:`parse_method`, so this module stays free of torch.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ATCON", "COMPONENTS", "NEEDS_ANCHOR", "NEEDS_LABELS", "method_name", "parse_method"]

COMPONENTS: Final = (
    "adabn",
    "tent",
    "atcon",
    "pseudo",
    "distill",
    "anchor",
    "supervised",
    "recalibrate",
)
#: the published ATCON fine-tuning (models.finetune), not the ``atcon`` component
ATCON: Final = "atcon"
#: components that need labeled frames, and frames of the cameras a model already serves
NEEDS_LABELS: Final = frozenset({"supervised"})
NEEDS_ANCHOR: Final = frozenset({"anchor", "recalibrate"})
#: training components that cannot share ATCON's steps (``tent`` has its own reason)
_NOT_WITH_ATCON: Final = frozenset({"pseudo", "distill", "anchor"})


def parse_method(method: str) -> tuple[str, ...]:
    """``"supervised+adabn"`` -> ``("adabn", "supervised")`` (canonical order); ``"none"`` -> ().

    ``ValueError`` names an unknown or repeated component, or a forbidden pair.
    """
    text = method.strip().lower()
    if text == "none":
        return ()
    parts = [p.strip() for p in text.split("+")]
    unknown = [p for p in parts if p not in COMPONENTS]
    if unknown or not parts:
        raise ValueError(
            f"method {method!r} is not a '+'-joined set of {', '.join(COMPONENTS)} (or 'none')"
        )
    if len(set(parts)) != len(parts):
        raise ValueError(f"method {method!r} names a component twice")
    if "distill" in parts and "adabn" in parts:
        raise ValueError(
            "distill and adabn cannot be combined: distill keeps the student's BatchNorm "
            "statistics and takes AdaBN's from its teacher"
        )
    if "tent" in parts and "atcon" in parts:
        raise ValueError(
            "tent and atcon cannot be combined: tent normalises with batch statistics, "
            "ATCON's per-image maps need fixed ones"
        )
    shared = sorted(set(parts) & _NOT_WITH_ATCON) if "atcon" in parts else []
    if shared:
        raise ValueError(
            f"atcon cannot be combined with {', '.join(shared)}: atcon runs the published "
            "ATCON schedule, whose steps are ATCON steps or (with 'supervised') labeled "
            "ones, and shares them with no other loss"
        )
    return tuple(c for c in COMPONENTS if c in parts)


def method_name(components: tuple[str, ...]) -> str:
    """The canonical name of a parsed method."""
    return "+".join(components) or "none"
