"""The one settings class of the product, read from ``ATCON_*`` environment variables.

Both the API (``service``) and the workers (``worker``) import it from here, so a
deployment sets each variable once. ``get_settings()`` is cached; tests build a
``Settings(...)`` directly and inject it (``app.dependency_overrides`` or the app
factory's argument).

Tokens are never stored in clear: ``ATCON_API_TOKENS`` is a comma-separated list of
``name:role:sha256hex`` entries, where ``sha256hex`` is the SHA-256 of the token
(``atcon token new NAME ROLE`` prints a fresh token and its entry).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._exceptions import SettingsError

__all__ = ["Role", "Settings", "TokenEntry", "get_settings", "parse_tokens"]

_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Role(enum.StrEnum):
    """What a token may do; each role includes the ones before it."""

    viewer = "viewer"  # read results
    operator = "operator"  # also upload
    admin = "admin"  # also delete, fine-tune, activate models, metrics, dead letters

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class TokenEntry:
    """One ``name:role:sha256hex`` entry of ``ATCON_API_TOKENS``."""

    name: str
    role: Role
    sha256: str

    def __str__(self) -> str:
        return f"{self.name}:{self.role.value}:{self.sha256}"


def parse_tokens(value: str) -> list[TokenEntry]:
    """Parse ``ATCON_API_TOKENS``; raise ``SettingsError`` naming the bad entry."""
    entries: list[TokenEntry] = []
    for position, raw in enumerate(value.split(","), start=1):
        raw = raw.strip()
        if not raw:
            continue
        parts = raw.split(":")
        if len(parts) != 3:
            raise SettingsError(
                f"ATCON_API_TOKENS entry {position} is not name:role:sha256hex "
                "(create one with `atcon token new NAME ROLE`)"
            )
        name, role, digest = parts
        if not _TOKEN_NAME.match(name):
            raise SettingsError(
                f"ATCON_API_TOKENS entry {position}: name must be 1-64 letters, digits, '_.-'"
            )
        try:
            parsed_role = Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise SettingsError(
                f"ATCON_API_TOKENS entry {position} ({name}): role must be one of {roles}"
            ) from None
        if not _SHA256_HEX.match(digest):
            raise SettingsError(
                f"ATCON_API_TOKENS entry {position} ({name}): the third field must be the "
                "64-character lowercase hex SHA-256 of the token, not the token itself"
            )
        if any(e.name == name for e in entries):
            raise SettingsError(f"ATCON_API_TOKENS names {name!r} twice")
        entries.append(TokenEntry(name, parsed_role, digest))
    return entries


class Settings(BaseSettings):
    """Every knob of the service and the workers (environment prefix ``ATCON_``)."""

    model_config = SettingsConfigDict(env_prefix="ATCON_", extra="ignore", frozen=True)

    #: the data directory: uploads, results, model versions; shared by every process
    data_dir: Path = Path("atcon-data")
    #: an S3-compatible object store shared by every process, ``s3://bucket/prefix``
    #: (endpoint and credentials: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...); unset:
    #: the data directory alone. With it, ``data_dir`` is this process's scratch and cache
    storage_url: str | None = None
    #: the broker; unset runs the embedded default (API and workers in one process)
    redis_url: str | None = None
    #: the first model version: registered (copied into models/v0001, active) when the API
    #: or a worker starts and no version is active
    checkpoint: Path | None = None
    #: comma-separated ``name:role:sha256hex`` entries
    api_tokens: str = ""
    #: development mode: the service may run without tokens (every caller is an admin)
    dev: bool = False

    #: largest accepted upload in bytes (413 above it)
    max_upload_bytes: int = Field(default=8 << 30, gt=0)
    #: bytes read from the request and written to disk at a time
    upload_chunk_bytes: int = Field(default=1 << 20, gt=0)
    #: largest frame upload (an image or a zip of images, ``POST /v1/frames``; 413 above)
    max_frame_upload_bytes: int = Field(default=256 << 20, gt=0)
    #: one zip import of frames: most entries, and most decompressed bytes of its images
    #: (413 above either, before anything is decompressed)
    zip_max_entries: int = Field(default=5000, ge=1)
    zip_max_total_bytes: int = Field(default=512 << 20, gt=0)
    #: largest body of every other request (JSON, forms; 413 above it), checked before
    #: the caller is authenticated
    max_body_bytes: int = Field(default=1 << 20, gt=0)

    #: reverse proxies whose X-Forwarded-For/-Proto headers are believed: comma-separated
    #: addresses or networks (``10.0.0.5,10.1.0.0/16``); empty: believe no one (the peer
    #: is the client, the connection's scheme is the scheme)
    forwarded_allow_ips: str = ""
    #: serve TLS directly: a PEM certificate (chain) and its private key, both or neither
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    #: failed authentications (wrong tokens, wrong sign-ins) one client address may make
    #: within ``auth_failure_window_s`` before its attempts answer 429 until the window
    #: has room again; shared through Redis by every API process when there is one
    auth_failure_limit: int = Field(default=30, ge=1)
    auth_failure_window_s: int = Field(default=300, ge=1)

    #: a running job whose worker sent no heartbeat for this long is handed to another
    visibility_timeout_s: float = Field(default=120.0, gt=0)
    #: seconds between heartbeats; default a quarter of the visibility timeout
    heartbeat_interval_s: float | None = Field(default=None, gt=0)
    #: attempts before a job fails for good and moves to the dead-letter list
    max_attempts: int = Field(default=3, ge=1)
    #: first retry delay; doubles with each attempt up to ``retry_backoff_max_s``
    retry_backoff_s: float = Field(default=10.0, ge=0)
    retry_backoff_max_s: float = Field(default=600.0, ge=0)
    #: days a finished job's record stays in the queue (Redis or memory) after it
    #: finished; then it is archived to ``<data_dir>/jobs/<id>.json`` and dropped from
    #: the queue (``GET /v1/jobs/{id}`` still answers from the archive)
    job_retention_days: float = Field(default=7.0, gt=0)
    #: key prefix of every Redis key, so several deployments can share one Redis
    queue_prefix: str = Field(default="atcon", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    #: with Redis: seconds between two checks by each API process that every upload
    #: without results still has its job (Redis may have lost its data); queues again
    #: those whose job is gone
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    #: seconds between two sweeps of ``tmp/`` by each worker process: staging left by
    #: a job whose worker was killed, partial uploads, exports of dead fine-tunes
    tmp_sweep_interval_s: float = Field(default=600.0, gt=0)
    #: a ``tmp/`` entry untouched this long (nothing in it modified) is orphaned staging
    tmp_max_age_s: float = Field(default=24 * 3600.0, gt=0)
    #: worker threads the embedded default runs inside ``atcon serve``
    embedded_workers: int = Field(default=1, ge=0)
    #: ``atcon worker``: serve this process's Prometheus metrics on this port (unset:
    #: off; see :mod:`worker.runtime.metrics`), bound to ``metrics_host``; no authentication,
    #: so bind it where only the scraper reaches (a pod's address in Kubernetes)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    #: detection: sampled frames per second, batch size, device (None: automatic)
    sample_fps: float = Field(default=2.0, gt=0)
    batch_size: int = Field(default=16, ge=1)
    device: str | None = None
    #: detection: score with the model compiled by torch.compile (:mod:`worker.detection.compiled`),
    #: compiled when a worker loads a model (seconds; falls back to eager on failure)
    detect_compile: bool = False
    #: detection: motion gating (:mod:`worker.detection.motion`): the model scores only samples
    #: that changed, the samples after each change, every skipped sample between two
    #: scored ones on either side of an event boundary, and at least one sample every
    #: ``gate_max_interval_s``; the others inherit the last scores. Off: every sample
    gating: bool = True
    gate_max_interval_s: float = Field(default=4.0, gt=0)
    #: PyTorch intra-op threads of a worker process, set at its start-up
    #: (:mod:`worker.runtime.threads`); 0: the cores the decoder leaves free, measured
    torch_threads: int = Field(default=0, ge=0)
    #: detection: loaded models a worker keeps (one per version serving some camera)
    model_cache_size: int = Field(default=3, ge=1)

    #: frame pool: frames each detection adds per minute of video; share of labeled
    #: frames held out for validation (the promotion gate's data)
    pool_frames_per_minute: float = Field(default=4.0, ge=0)
    pool_val_fraction: float = Field(default=0.3, ge=0, le=1)
    #: nightly fine-tune: cron expression in ``finetune_timezone``; skipped unless at
    #: least ``finetune_min_new_frames`` frames arrived since the last fine-tune
    finetune_schedule: str = "0 2 * * *"
    finetune_timezone: str = "UTC"
    finetune_min_new_frames: int = Field(default=200, ge=0)
    #: comma-separated cameras: the nightly run also queues, for each, a fine-tune on
    #: that camera's frames only, promoted for that camera only (empty: global only)
    finetune_cameras: str = ""
    #: fine-tune defaults (a request may override them). ``finetune_method``: how a
    #: fine-tune adapts (models.methods), comma-separated in order of preference: the
    #: first that the frames allow runs. The default is what
    #: docs/results/adaptation_sources.md found on a night camera across three source
    #: models: ``adabn+atcon+supervised`` with the reviewed labels (K = 3: the highest
    #: and tightest lift, above ``adabn+supervised`` on each source model), ``adabn``
    #: without any (a candidate for an admin: nothing is promoted without labels)
    finetune_method: str = "adabn+atcon+supervised,adabn"
    finetune_steps: int = Field(default=200, ge=1)
    #: a fine-tune job saves its training state every this many steps under
    #: ``tmp/finetune-<job id>/state``; the job delivered again after its worker died
    #: resumes from there rather than starting over
    finetune_save_every: int = Field(default=50, ge=1)
    #: the most optimiser steps one fine-tune may run (a request asking more is refused
    #: with 422; ``epochs`` that work out to more are capped)
    finetune_max_steps: int = Field(default=5000, ge=1)
    finetune_lr: float = Field(default=1e-5, gt=0)
    finetune_batch_size: int = Field(default=16, ge=1)
    #: a class's decision threshold is re-chosen only from at least this many
    #: validation positives and as many negatives (else the parent's is kept); the
    #: default of ``atcon train``/``atcon finetune --min-val-per-class``
    finetune_min_val_per_class: int = Field(default=5, ge=1)
    #: unlabeled pool frames on which a candidate without labeled validation is shown
    #: beside its parent on the models page (0: no comparison)
    finetune_compare_frames: int = Field(default=12, ge=0, le=200)
    #: lease of the fine-tune lock in Redis, renewed every third of it; a holder that
    #: cannot renew it for this long stops (``LockLostError``)
    finetune_lock_ttl_s: float = Field(default=60.0, ge=0.1)
    #: recent processed videos (of the fine-tune's camera, if any) on which a new version
    #: left a candidate (or a request with ``compare_videos``) detects again, to list the
    #: events it and the served model disagree on (0: never)
    finetune_compare_videos: int = Field(default=3, ge=0, le=50)
    #: promotion gate: the largest fall in validation macro-F1 allowed, in points
    gate_f1_tolerance_points: float = Field(default=0.5, ge=0)
    #: promotion gate: attention consistency may never fall, even when validation
    #: F1 rose beyond the tolerance (by default it only breaks ties)
    gate_strict_consistency: bool = False
    #: event clips (GET /v1/videos/{id}/events/{event_id}/clip.mp4): seconds of video
    #: kept before and after the event
    clip_margin_s: float = Field(default=2.0, ge=0, le=300)

    @field_validator("finetune_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from .runtime.scheduler import validate_cron

        return validate_cron(value)

    @field_validator("finetune_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known IANA time zone") from None
        return value

    @field_validator("finetune_method")
    @classmethod
    def _method_valid(cls, value: str) -> str:
        from models.methods import method_name, parse_method

        methods = [method_name(parse_method(m)) for m in _split(value)]
        if not methods:
            raise ValueError("ATCON_FINETUNE_METHOD names no method")
        return ",".join(methods)

    @field_validator("finetune_cameras")
    @classmethod
    def _cameras_valid(cls, value: str) -> str:
        from .cameras import validate_camera

        for name in _split(value):
            validate_camera(name, "ATCON_FINETUNE_CAMERAS entry")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value:
            from .object_store import parse_storage_url

            parse_storage_url(value)  # SettingsError naming the expected form
        return value

    @field_validator("redis_url", "device", "metrics_port", "storage_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        entries = [e.strip() for e in value.split(",") if e.strip()]
        for entry in entries:
            if entry == "*":
                raise ValueError(
                    "'*' would believe forwarded headers from anyone, so any client could "
                    "claim another address or https; list the proxies' addresses or network"
                )
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return ",".join(entries)

    @field_validator("checkpoint", "ssl_certfile", "ssl_keyfile", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_tokens")
    @classmethod
    def _tokens_parse(cls, value: str) -> str:
        try:
            parse_tokens(value)
        except SettingsError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError("retry_backoff_max_s must be at least retry_backoff_s")
        if self.finetune_steps > self.finetune_max_steps:
            raise ValueError(
                f"ATCON_FINETUNE_STEPS ({self.finetune_steps}) must be at most "
                f"ATCON_FINETUNE_MAX_STEPS ({self.finetune_max_steps}); lower the first or "
                "raise the second"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("set both ssl_certfile and ssl_keyfile to serve TLS, or neither")
        return self

    @cached_property
    def tokens(self) -> list[TokenEntry]:
        """The parsed ``api_tokens`` (parsed once: the settings are frozen)."""
        return parse_tokens(self.api_tokens)

    @property
    def finetune_method_list(self) -> list[str]:
        """``finetune_method`` as a list, in order of preference."""
        return _split(self.finetune_method)

    @property
    def finetune_camera_list(self) -> list[str]:
        """``finetune_cameras`` as a list, without duplicates."""
        return list(dict.fromkeys(_split(self.finetune_cameras)))

    @property
    def heartbeat_s(self) -> float:
        if self.heartbeat_interval_s is not None:
            return min(self.heartbeat_interval_s, self.visibility_timeout_s / 2)
        return self.visibility_timeout_s / 4

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: API and workers share one process."""
        return self.redis_url is None

    def check_safe_to_serve(self) -> None:
        """Raise ``SettingsError`` when the API must not start with these settings."""
        if not self.dev and not self.tokens:
            raise SettingsError(
                "no API tokens are configured: set ATCON_API_TOKENS (create entries with "
                "`atcon token new NAME ROLE`), or set ATCON_DEV=1 for a development "
                "server in which every caller is an admin"
            )

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: ``b * 2**(attempt-1)``, capped."""
        if attempt < 1:
            raise ValueError(f"attempt must be at least 1, got {attempt}")
        return float(min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** (attempt - 1)))


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
