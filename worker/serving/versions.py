"""Model versions: a directory per version with its card, and an atomic ACTIVE pointer.

Layout under ``<data_dir>/models``::

    v0001/checkpoint.pt    the model (a self-describing checkpoint)
    v0001/card.json        parent, configuration, data, metrics before/after, status, reason
    v0001/comparison.json  optional: a candidate beside its parent on unlabeled pool frames
    v0001/comparison/      its Grad-CAM overlays (:mod:`worker.training.comparison`)
    ACTIVE                 the active version's name, replaced by rename: the default
    CAMERAS.json           {"cameras": {camera: version}}: versions activated for some
                           cameras only, replaced by rename
    .lock                  serialises activations (flock) across processes
    .first.lock            serialises the registration of the first version
                           (``ATCON_CHECKPOINT``, :meth:`ModelRegistry.ensure_initial`)

A video of a camera listed in ``CAMERAS.json`` is scored by that camera's version;
every other video by the ``ACTIVE`` default. Each camera maps to one version, and
every activation (default or per camera) reads and rewrites the pointers under the
lock, so two admins activating at once never lose an update nor leave two versions
serving one camera.

A version directory is assembled under a temporary name and renamed into place, so
a worker killed while registering leaves no half-registered version (only a
``.tmp-*`` folder that :meth:`ModelRegistry.cleanup` removes). Fine-tuning never
writes the active version's files; cards change only through atomic rewrites.

Statuses: ``active`` (the one served), ``candidate`` (registered, not promoted; an
admin may activate it), ``rejected`` (failed the promotion gate; cannot be
activated), ``retired`` (was active once; activating it again is a roll-back).

``ACTIVE`` is the one source of truth for which version is the default: a card read
through :meth:`ModelRegistry.get` says ``active`` exactly when ``ACTIVE`` names it,
and a card stored as ``active`` that ``ACTIVE`` does not name reads as ``retired``.
An activation writes the pointer first and the cards' history after, all under the
lock, so a process killed between the two leaves one active version, never two.
The status speaks of the default only; the cameras a version serves are in
``CAMERAS.json`` (:meth:`ModelRegistry.cameras_of`), and the cameras it was adapted on
in its card (``cameras``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from models.atomic import atomic_write_bytes, atomic_write_json
from models.checkpoint_info import file_sha256

from .._exceptions import (
    InvalidCameraError,
    NoCameraVersionError,
    UnknownVersionError,
    VersionError,
    VersionsUnreadableError,
)
from ..cameras import validate_camera

__all__ = [
    "COMPARISON_DIR",
    "COMPARISON_JSON",
    "GateDecision",
    "ModelCard",
    "ModelRegistry",
    "NoCameraVersionError",
    "UnknownVersionError",
    "VersionError",
    "VersionStatus",
    "VersionsUnreadableError",
    "promotion_gate",
]

logger = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^v\d{4,9}$")
#: a candidate's comparison with its parent, attached to its version folder
#: (written by :mod:`worker.training.comparison`, pruned by :mod:`worker.deletion`)
COMPARISON_JSON = "comparison.json"
COMPARISON_DIR = "comparison"
#: names of the files a version may carry besides its checkpoint and card
_ATTACHMENT_RE = re.compile(
    r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$"
)


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
    #: the cameras whose frames it was adapted on; None: every camera's (global)
    cameras: list[str] | None = None
    #: training data withdrawn after it was trained (a deleted video): one entry each,
    #: ``{"what", "video_id", "frames", "at", "by"}``; the weights are unchanged
    withdrawn: list[dict[str, Any]] = field(default_factory=list)

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
    maps_unchanged: bool = False,
    strict_consistency: bool = False,
) -> GateDecision:
    r"""Decide whether a fine-tuned model may replace the active one.

    Detection first, attention second. With :math:`\Delta F_1` the change of
    validation macro-F1 in points and :math:`	au` = ``f1_tolerance_points``:

    - :math:`\Delta F_1 < -	au`: rejected (detection got worse);
    - :math:`\Delta F_1 > 	au`: promoted (detection got better beyond the noise the
      gate tolerates); a fall of mean attention consistency is recorded in the
      reason, not a veto;
    - otherwise (detection unchanged within :math:`	au`): promoted only if mean
      attention consistency does not fall, so a change that buys nothing on the
      labels cannot cost the maps anything either.

    Why consistency is not a veto on a real detection gain: consistency is a
    label-free proxy of map quality, and on a shifted camera the two disagree. In
    ``docs/results/adaptation.md`` the default method raises the Grad-CAM pointing
    game and mIoU against the objects' pixel masks while the consistency of the same
    models falls; holding every gain hostage to the proxy rejected every candidate of
    the nightly loop on a night camera. ``strict_consistency`` (the setting
    ``ATCON_GATE_STRICT_CONSISTENCY``) restores the veto: consistency may never fall.

    Without a labeled validation set (``before`` or ``after`` is ``None``) nothing is
    promoted automatically: the version stays a candidate for an admin to judge.

    ``maps_unchanged``: the candidate differs from its parent in its output biases
    only (the ``recalibrate`` method). A class's Grad-CAM map,
    :math:`\sum_k \mathrm{mean}(\partial y_c / \partial A_k) A_k`, does not depend on
    the bias of :math:`y_c`, so every class's maps are the parent's; the consistency
    of the *top* class can still move because the top class moves, which says
    nothing about the maps. Consistency is then not compared, and the reason says so.
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
    change_points = 100.0 * (f1_after - f1_before)
    if not (f1_after == f1_after and cons_after == cons_after):  # NaN
        return GateDecision(False, VersionStatus.REJECTED, "validation metrics are NaN")
    f1_text = (
        f"validation macro-F1 {f1_before:.4f} -> {f1_after:.4f} on {after.get('images')} frames"
    )
    if change_points < -f1_tolerance_points:
        return GateDecision(
            False,
            VersionStatus.REJECTED,
            f"validation macro-F1 fell by {-change_points:.2f} points "
            f"({f1_before:.4f} -> {f1_after:.4f}), more than the {f1_tolerance_points} allowed",
        )
    if maps_unchanged:
        return GateDecision(
            True,
            VersionStatus.ACTIVE,
            f"{f1_text}; consistency not compared (only the output biases changed, every "
            "class's attention maps are the parent's): promoted",
        )
    cons_text = f"consistency {cons_before:.4f} -> {cons_after:.4f}"
    if cons_after < cons_before:
        if strict_consistency or change_points <= f1_tolerance_points:
            why = (
                "ATCON_GATE_STRICT_CONSISTENCY is set"
                if strict_consistency
                else f"F1 rose by at most the {f1_tolerance_points} points the gate tolerates"
            )
            return GateDecision(
                False,
                VersionStatus.REJECTED,
                f"attention consistency fell ({cons_before:.4f} -> {cons_after:.4f}) and "
                f"{why}; {f1_text}",
            )
        return GateDecision(
            True,
            VersionStatus.ACTIVE,
            f"{f1_text} (+{change_points:.2f} points); {cons_text}, a fall, recorded "
            "and not a veto on a detection gain (compare the maps on the models page): "
            "promoted",
        )
    return GateDecision(True, VersionStatus.ACTIVE, f"{f1_text}, {cons_text}: promoted")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """The model versions stored under one directory."""

    CHECKPOINT = "checkpoint.pt"
    CARD = "card.json"
    POINTER = "ACTIVE"
    CAMERAS = "CAMERAS.json"
    LOCK = ".lock"
    #: serialises the first version's registration (apart from ``LOCK``, which
    #: registering an active version takes to activate it)
    FIRST_LOCK = ".first.lock"
    #: the reason on the card of the version registered from ``ATCON_CHECKPOINT``
    INITIAL_REASON = "initial model from ATCON_CHECKPOINT"

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
        """The card of ``version``, its status as the ``ACTIVE`` pointer makes it."""
        return self._resolved(self._stored(version), self.active_version())

    def _stored(self, version: str) -> ModelCard:
        card = json.loads((self._dir(version) / self.CARD).read_text(encoding="utf-8"))
        return ModelCard.from_dict(card)

    @staticmethod
    def _resolved(card: ModelCard, active: str | None) -> ModelCard:
        """``card`` with the status the pointer gives it (the pointer wins)."""
        if card.version == active:
            card.status = VersionStatus.ACTIVE
        elif card.status is VersionStatus.ACTIVE:
            card.status = VersionStatus.RETIRED
            card.reason = f"no longer the active version ({active or 'none is'} now)"
        return card

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
        """The version's ``comparison.json`` (:mod:`worker.training.comparison`), if it has one."""
        path = self._dir(version) / "comparison.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("unreadable comparison of %s: %s", version, exc)
            return None
        return data if isinstance(data, dict) else None

    def disagreements(self, version: str) -> dict[str, Any] | None:
        """The version's ``disagreements.json`` (:mod:`worker.finetune.disagreements`), if any."""
        path = self._dir(version) / "disagreements.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("unreadable disagreements of %s: %s", version, exc)
            return None
        return data if isinstance(data, dict) else None

    def versions(self) -> list[ModelCard]:
        """Every version, oldest first."""
        names = sorted(
            (p.name for p in self.root.iterdir() if _VERSION_RE.match(p.name)),
            key=lambda name: int(name[1:]),
        )
        active = self.active_version()
        return [
            self._resolved(self._stored(name), active)
            for name in names
            if (self.root / name / self.CARD).is_file()
        ]

    def active_version(self, camera: str | None = None) -> str | None:
        """The version serving videos of ``camera``: its own, else the default (``ACTIVE``).

        ``camera=None`` asks for the default alone.
        """
        if camera is not None:
            scoped = self.camera_versions().get(camera)
            if scoped is not None:
                return scoped
        pointer = self.root / self.POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        return name or None

    def active_checkpoint(self, camera: str | None = None) -> tuple[str, Path] | None:
        """The version serving ``camera`` (see :meth:`active_version`) and its checkpoint,
        or ``None`` when none is active."""
        version = self.active_version(camera)
        if version is None:
            return None
        return version, self.checkpoint_path(version)

    def camera_versions(self) -> dict[str, str]:
        """The versions activated for single cameras: ``{camera: version}``."""
        path = self.root / self.CAMERAS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise VersionsUnreadableError(f"{path} is not valid JSON: {exc}") from exc
        mapping = data.get("cameras") if isinstance(data, dict) else None
        if not isinstance(mapping, dict):
            raise VersionsUnreadableError(f"{path} holds no 'cameras' object")
        for camera, version in mapping.items():
            try:
                validate_camera(camera, f"{path.name} entry")
            except InvalidCameraError as exc:
                raise VersionsUnreadableError(str(exc)) from exc
            if not isinstance(version, str) or not _VERSION_RE.match(version):
                raise VersionsUnreadableError(
                    f"{path} names {version!r:.40} for {camera}, not a version"
                )
        return dict(mapping)

    def cameras_of(self, version: str) -> list[str]:
        """The cameras ``version`` is activated for, sorted."""
        return sorted(c for c, v in self.camera_versions().items() if v == version)

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
        cameras: Iterable[str] | None = None,
    ) -> ModelCard:
        """Store a copy of ``checkpoint`` as a new version; activate it if ``status`` is active.

        ``attachments`` maps names inside the version directory (``comparison.json``,
        ``comparison/x.png``) to files copied there with the checkpoint, in the same
        atomic rename. ``cameras``: the cameras whose frames it was adapted on (recorded
        in the card); an active status then activates it for those cameras only,
        keeping the default.
        """
        scope = _cameras(cameras) if cameras is not None else None
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
                    cameras=scope,
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
            return self.activate(card.version, reason=reason, cameras=scope)
        return card

    def ensure_initial(self, checkpoint: str | Path | None) -> ModelCard | None:
        """Make ``checkpoint`` (``ATCON_CHECKPOINT``) the first active version when no
        version is the default yet; return its card, or ``None`` when nothing was done.

        Called when the API and every worker start, so a model is always served through
        a version and its card. Idempotent and safe when processes start together: the
        check and the registration happen under a lock, and a version this method
        registered before with the same weights (interrupted before its activation, or
        an ``ACTIVE`` pointer removed by hand) is activated rather than copied again.
        ``None`` (no checkpoint configured) or a missing file does nothing: the model
        to serve is then missing, which :func:`worker.serving.model_cache.model_reference` reports.
        """
        if checkpoint is None or self.active_version() is not None:
            return None
        source = Path(checkpoint)
        if not source.is_file():
            logger.warning(
                "ATCON_CHECKPOINT %s does not exist; no model version registered", source
            )
            return None
        with self._locked(self.FIRST_LOCK):
            if self.active_version() is not None:  # another process got there first
                return None
            digest = file_sha256(source)
            for card in self.versions():  # only one this method registered, never a fine-tune's
                if card.reason == self.INITIAL_REASON and card.checkpoint_sha256 == digest:
                    logger.info(
                        "model version %s holds ATCON_CHECKPOINT; activating it", card.version
                    )
                    return self.activate(card.version, reason=self.INITIAL_REASON)
            return self.register(source, status=VersionStatus.ACTIVE, reason=self.INITIAL_REASON)

    @contextmanager
    def _locked(self, name: str = LOCK) -> Iterator[None]:
        """Hold one of the registry's locks (an ``flock``, so also across processes)."""
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def withdraw_comparison_frames(self, frame_ids: set[str], video_id: str) -> int:
        """Drop a deleted video's frames from every version's comparison (their overlays
        ``comparison/<frame_id>.*`` and their entries in ``comparison.json``, whose
        ``frames_withdrawn`` counts them), under the registry's lock; return how many
        files and entries went."""
        removed = 0
        with self._locked():
            for version_dir in sorted(self.root.glob("v*")):
                folder = version_dir / COMPARISON_DIR
                for frame_id in frame_ids:
                    for overlay in folder.glob(f"{frame_id}.*") if folder.is_dir() else []:
                        self._remove_file(overlay)
                        removed += 1
                path = version_dir / COMPARISON_JSON
                try:
                    comparison = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                frames = comparison.get("frames") if isinstance(comparison, dict) else None
                if not isinstance(frames, list):
                    continue
                kept = [
                    f
                    for f in frames
                    if not (
                        isinstance(f, dict)
                        and (f.get("video_id") == video_id or f.get("frame_id") in frame_ids)
                    )
                ]
                if len(kept) != len(frames):
                    comparison["frames"] = kept
                    comparison["frames_withdrawn"] = (
                        int(comparison.get("frames_withdrawn", 0)) + len(frames) - len(kept)
                    )
                    atomic_write_json(path, comparison)
                    removed += len(frames) - len(kept)
        return removed

    def _remove_file(self, path: Path) -> None:
        """Remove one file of a version (the object store backend removes its object too)."""
        path.unlink(missing_ok=True)

    def _rewrite(self, card: ModelCard, status: VersionStatus | None, reason: str) -> ModelCard:
        """Record ``reason`` in the card's history; change its status unless ``None``."""
        if status is not None:
            card.status = status
            card.reason = reason
        card.history.append({"at": _now(), "status": str(card.status), "reason": reason})
        atomic_write_json(self._dir(card.version) / self.CARD, card.to_dict())
        return card

    def record_withdrawal(self, version: str, entry: Mapping[str, Any], *, by: str) -> ModelCard:
        """Record on ``version``'s card that data it was trained on was withdrawn.

        ``entry`` says what (``what``, a sentence; ``video_id``; ``frames``); the time
        and ``by`` are added, and the card's history gets a line. The weights stay as
        they are: the card tells an admin the version learned from data that is gone.
        """
        if not by:
            raise ValueError("by must name who withdrew the data")
        with self._locked():
            card = self.get(version)
            card.withdrawn.append({**entry, "at": _now(), "by": by})
            return self._rewrite(card, None, f"data withdrawn by {by}: {entry.get('what')}")

    def activate(
        self,
        version: str,
        *,
        reason: str = "activated by an admin",
        cameras: Iterable[str] | None = None,
    ) -> ModelCard:
        """Make ``version`` the served model (also the way to roll back).

        With ``cameras``, serve it to videos of those cameras only: the default
        (``ACTIVE``) and the other cameras' versions stay as they are.
        """
        scope = _cameras(cameras) if cameras is not None else None
        if scope is not None and not scope:
            raise ValueError("cameras must name at least one camera (or be None: the default)")
        with self._locked():
            card = self.get(version)
            if card.status is VersionStatus.REJECTED:
                raise VersionError(
                    f"model version {version} was rejected ({card.reason}) and cannot be activated"
                )
            if scope:
                return self._activate_for(card, scope, reason)
            previous = self.active_version()
            if previous == version:
                return card
            # the pointer is the truth: written first, the cards' history after
            atomic_write_bytes(self.root / self.POINTER, (version + "\n").encode())
            if previous:
                with contextlib.suppress(UnknownVersionError):  # a pointer to a removed one
                    self._rewrite(
                        self.get(previous), VersionStatus.RETIRED, f"replaced by {version}"
                    )
            logger.info("model version %s is now active (was %s)", version, previous)
            return self._rewrite(self.get(version), VersionStatus.ACTIVE, reason)

    def _activate_for(self, card: ModelCard, cameras: list[str], reason: str) -> ModelCard:
        """Point ``cameras`` at ``card``'s version; the caller holds the lock."""
        mapping = self.camera_versions()
        replaced: dict[str, list[str]] = {}
        for camera in cameras:
            previous = mapping.get(camera)
            if previous is not None and previous != card.version:
                replaced.setdefault(previous, []).append(camera)
            mapping[camera] = card.version
        atomic_write_json(self.root / self.CAMERAS, {"cameras": dict(sorted(mapping.items()))})
        for previous, names in replaced.items():
            with contextlib.suppress(UnknownVersionError):  # a pointer to a removed version
                self._rewrite(
                    self.get(previous),
                    None,
                    f"replaced for camera(s) {', '.join(names)} by {card.version}",
                )
        logger.info("model version %s is now active for %s", card.version, ", ".join(cameras))
        return self._rewrite(card, None, f"active for camera(s) {', '.join(cameras)}: {reason}")

    def deactivate_cameras(
        self, cameras: Iterable[str], *, reason: str = "deactivated by an admin"
    ) -> dict[str, str]:
        """Serve ``cameras`` the default again; return ``{camera: version}`` removed.

        Raises :class:`NoCameraVersionError` when none of them had a version of its own.
        """
        scope = _cameras(cameras)
        with self._locked():
            mapping = self.camera_versions()
            removed = {c: mapping.pop(c) for c in scope if c in mapping}
            if not removed:
                raise NoCameraVersionError(
                    f"no model version is activated for camera(s) {', '.join(scope)}; "
                    "they are served the default version already"
                )
            atomic_write_json(self.root / self.CAMERAS, {"cameras": dict(sorted(mapping.items()))})
            for camera, version in removed.items():
                with contextlib.suppress(UnknownVersionError):
                    self._rewrite(
                        self.get(version), None, f"no longer active for camera {camera}: {reason}"
                    )
        logger.info("camera(s) %s are served the default version again", ", ".join(removed))
        return removed


def _cameras(cameras: Iterable[str]) -> list[str]:
    """Validated camera identifiers, duplicates dropped, in order."""
    if isinstance(cameras, str):
        raise TypeError("cameras must be a list of camera identifiers, not one string")
    return list(dict.fromkeys(validate_camera(c, "cameras entry") for c in cameras))
