"""Model versions: a directory per version with its card, and an atomic ACTIVE pointer.

Layout under ``<data_dir>/models``::

    v0001/checkpoint.pt    the model (a self-describing checkpoint)
    v0001/card.json        parent, configuration, data, metrics before/after, status, reason
    v0001/comparison.json  optional: a candidate beside its parent on unlabeled pool frames
    v0001/comparison/      its Grad-CAM overlays (:mod:`worker.comparison`)
    ACTIVE                 the active version's name, replaced by rename

A version directory is assembled under a temporary name and renamed into place, so
a worker killed while registering leaves no half-registered version (only a
``.tmp-*`` folder that :meth:`ModelRegistry.cleanup` removes). Fine-tuning never
writes the active version's files; cards change only through atomic rewrites.

Statuses: ``active`` (the one served), ``candidate`` (registered, not promoted; an
admin may activate it), ``rejected`` (failed the promotion gate; cannot be
activated), ``retired`` (was active once; activating it again is a roll-back).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from models.checkpoint import file_sha256

from .storage import atomic_write_bytes, atomic_write_json

__all__ = [
    "GateDecision",
    "ModelCard",
    "ModelRegistry",
    "UnknownVersionError",
    "VersionError",
    "VersionStatus",
    "promotion_gate",
]

logger = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^v\d{4,9}$")
#: names of the files a version may carry besides its checkpoint and card
_ATTACHMENT_RE = re.compile(
    r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$"
)


class VersionError(ValueError):
    """A model version cannot be registered or activated as asked."""


class UnknownVersionError(VersionError, LookupError):
    """No model version of that name exists."""


class VersionStatus(StrEnum):
    ACTIVE = "active"
    CANDIDATE = "candidate"
    REJECTED = "rejected"
    RETIRED = "retired"


@dataclass
class ModelCard:
    """What a version is, where it came from, and why it has its status."""

    version: str
    status: VersionStatus
    reason: str
    created_at: str
    checkpoint_sha256: str
    parent: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics_before: dict[str, Any] | None = None
    metrics_after: dict[str, Any] | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        data = dict(data)
        data["status"] = VersionStatus(data["status"])
        return cls(**data)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    status: VersionStatus
    reason: str


def promotion_gate(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    f1_tolerance_points: float = 0.5,
) -> GateDecision:
    """Decide whether a fine-tuned model may replace the active one.

    Promote only if validation macro-F1 falls by at most ``f1_tolerance_points``
    (percentage points) and mean attention consistency does not fall. Without a
    labeled validation set (``before`` or ``after`` is ``None``) nothing is promoted
    automatically: the version stays a candidate for an admin to judge.
    """
    if f1_tolerance_points < 0:
        raise ValueError(f"f1_tolerance_points must be >= 0, got {f1_tolerance_points}")
    if before is None or after is None:
        return GateDecision(
            False,
            VersionStatus.CANDIDATE,
            "no labeled validation set: not promoted automatically; an admin may activate it",
        )
    f1_before, f1_after = float(before["macro_f1"]), float(after["macro_f1"])
    cons_before, cons_after = float(before["consistency"]), float(after["consistency"])
    drop_points = 100.0 * (f1_before - f1_after)
    if not (f1_after == f1_after and cons_after == cons_after):  # NaN
        return GateDecision(False, VersionStatus.REJECTED, "validation metrics are NaN")
    if drop_points > f1_tolerance_points:
        return GateDecision(
            False,
            VersionStatus.REJECTED,
            f"validation macro-F1 fell by {drop_points:.2f} points "
            f"({f1_before:.4f} -> {f1_after:.4f}), more than the {f1_tolerance_points} allowed",
        )
    if cons_after < cons_before:
        return GateDecision(
            False,
            VersionStatus.REJECTED,
            f"attention consistency fell ({cons_before:.4f} -> {cons_after:.4f})",
        )
    return GateDecision(
        True,
        VersionStatus.ACTIVE,
        f"validation macro-F1 {f1_before:.4f} -> {f1_after:.4f}, "
        f"consistency {cons_before:.4f} -> {cons_after:.4f}: promoted",
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """The model versions stored under one directory."""

    CHECKPOINT = "checkpoint.pt"
    CARD = "card.json"
    POINTER = "ACTIVE"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ reading

    def _dir(self, version: str) -> Path:
        if not _VERSION_RE.match(version):
            raise UnknownVersionError(f"{version!r} is not a model version name (like v0001)")
        path = self.root / version
        if not (path / self.CARD).is_file():
            raise UnknownVersionError(f"model version {version} does not exist")
        return path

    def get(self, version: str) -> ModelCard:
        card = json.loads((self._dir(version) / self.CARD).read_text(encoding="utf-8"))
        return ModelCard.from_dict(card)

    def checkpoint_path(self, version: str) -> Path:
        return self._dir(version) / self.CHECKPOINT

    def attachment_path(self, version: str, name: str) -> Path:
        """An attached file of ``version`` (``comparison/x.png``); ``UnknownVersionError``
        when the name is malformed or no such file exists."""
        if not _ATTACHMENT_RE.match(name) or name in (self.CHECKPOINT, self.CARD):
            raise UnknownVersionError(f"{name!r} is not a file of model version {version}")
        path = self._dir(version) / name
        if not path.is_file():
            raise UnknownVersionError(f"model version {version} has no file {name}")
        return path

    def comparison(self, version: str) -> dict[str, Any] | None:
        """The version's ``comparison.json`` (:mod:`worker.comparison`), if it has one."""
        path = self._dir(version) / "comparison.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("unreadable comparison of %s: %s", version, exc)
            return None
        return data if isinstance(data, dict) else None

    def versions(self) -> list[ModelCard]:
        """Every version, oldest first."""
        names = sorted(
            (p.name for p in self.root.iterdir() if _VERSION_RE.match(p.name)),
            key=lambda name: int(name[1:]),
        )
        return [self.get(name) for name in names if (self.root / name / self.CARD).is_file()]

    def active_version(self) -> str | None:
        pointer = self.root / self.POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        return name or None

    def active_checkpoint(self) -> tuple[str, Path] | None:
        """The active version and its checkpoint, or ``None`` when none is active."""
        version = self.active_version()
        if version is None:
            return None
        return version, self.checkpoint_path(version)

    # ------------------------------------------------------------------ writing

    def cleanup(self) -> int:
        """Remove folders left by registrations that were interrupted; return how many."""
        removed = 0
        for path in self.root.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        return removed

    def _next_name(self) -> str:
        numbers = [int(p.name[1:]) for p in self.root.iterdir() if _VERSION_RE.match(p.name)]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(
        self,
        checkpoint: str | Path,
        *,
        status: VersionStatus,
        reason: str,
        parent: str | None = None,
        config: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        metrics_before: dict[str, Any] | None = None,
        metrics_after: dict[str, Any] | None = None,
        attachments: Mapping[str, str | Path] | None = None,
    ) -> ModelCard:
        """Store a copy of ``checkpoint`` as a new version; activate it if ``status`` is active.

        ``attachments`` maps names inside the version directory (``comparison.json``,
        ``comparison/x.png``) to files copied there with the checkpoint, in the same
        atomic rename.
        """
        source = Path(checkpoint)
        if not source.is_file():
            raise VersionError(f"checkpoint {source} does not exist")
        for name in attachments or {}:
            if not _ATTACHMENT_RE.match(name) or name in (self.CHECKPOINT, self.CARD):
                raise VersionError(f"{name!r} cannot be a file of a model version")
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            shutil.copyfile(source, staging / self.CHECKPOINT)
            for name, path in (attachments or {}).items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / name)
            for _ in range(100):
                name = self._next_name()
                stored = VersionStatus.CANDIDATE if status is VersionStatus.ACTIVE else status
                card = ModelCard(
                    version=name,
                    status=stored,
                    reason=reason,
                    created_at=_now(),
                    checkpoint_sha256=file_sha256(staging / self.CHECKPOINT),
                    parent=parent,
                    config=config or {},
                    data=data or {},
                    metrics_before=metrics_before,
                    metrics_after=metrics_after,
                    history=[{"at": _now(), "status": str(stored), "reason": reason}],
                )
                atomic_write_json(staging / self.CARD, card.to_dict())
                try:
                    staging.rename(self.root / name)  # fails if another process took the name
                except OSError:
                    continue
                break
            else:  # pragma: no cover - a hundred concurrent registrations
                raise VersionError("could not find a free version name")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("registered model version %s (%s)", card.version, status)
        if status is VersionStatus.ACTIVE:
            return self.activate(card.version, reason=reason)
        return card

    def _rewrite(self, card: ModelCard, status: VersionStatus, reason: str) -> ModelCard:
        card.status = status
        card.reason = reason
        card.history.append({"at": _now(), "status": str(status), "reason": reason})
        atomic_write_json(self._dir(card.version) / self.CARD, card.to_dict())
        return card

    def activate(self, version: str, *, reason: str = "activated by an admin") -> ModelCard:
        """Make ``version`` the served model (also the way to roll back)."""
        card = self.get(version)
        if card.status is VersionStatus.REJECTED:
            raise VersionError(
                f"model version {version} was rejected ({card.reason}) and cannot be activated"
            )
        previous = self.active_version()
        atomic_write_bytes(self.root / self.POINTER, (version + "\n").encode())
        if previous and previous != version:
            self._rewrite(self.get(previous), VersionStatus.RETIRED, f"replaced by {version}")
        logger.info("model version %s is now active (was %s)", version, previous)
        if card.status is VersionStatus.ACTIVE:
            return card
        return self._rewrite(card, VersionStatus.ACTIVE, reason)
