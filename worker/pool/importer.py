"""The ``import`` job: a zip of images uploaded to the frame pool, extracted by a worker.

The API only streams the upload to disk (capped), checks the archive's central
directory (:func:`worker.pool.frames.check_zip`: a zip, not empty, entry count and
declared decompressed size under the settings' caps), stages it as
``tmp/import-<upload_id>.zip`` (``staging/`` in the object store, when there is one:
:meth:`worker.storage.Storage.stage`) and queues this job; decompression, image decoding and
the pool's writes happen here, off the request path. The job's result reports how
many frames were added and each refused entry with its reason; an archive without a
single usable image fails the job with the reason. A retried import adds each entry
once (frame ids derive from the upload id and the entry). The staged archive is
removed when the job ends (done or failed for good); one left behind by a lost job
is swept from ``tmp/`` (:mod:`worker.runtime.tmp_sweep`; not yet from the object store).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .._exceptions import JobError
from ..runtime.jobs import IMPORT, JobContext, JobOutcome
from ..storage import Storage, validate_id
from .frames import InvalidFrameError

__all__ = ["IMPORT", "discard_archive", "import_frames", "stage_archive", "staged_archive"]

logger = logging.getLogger(__name__)

#: refused entries listed in a failed job's error (all of them are in its detail)
_REASONS_IN_ERROR = 5


def _archive_name(upload_id: str) -> str:
    return f"import-{validate_id(upload_id, 'upload_id')}.zip"


def staged_archive(storage: Storage, upload_id: str) -> Path:
    """Where the archive of import ``upload_id`` is read by its job (copied in from the
    object store when there is one)."""
    return storage.staged_path(_archive_name(upload_id))


def stage_archive(storage: Storage, received: Path, upload_id: str) -> None:
    """Hand a received, checked archive to its job (``tmp/``, or the object store)."""
    storage.stage(received, _archive_name(upload_id))


def discard_archive(storage: Storage, upload_id: str) -> None:
    """Remove a staged archive: imported, refused, or its job not queued."""
    storage.discard_staged(_archive_name(upload_id))


def _input_size(ctx: JobContext) -> int:
    """The served model's input size: the size of every frame in the pool."""
    from models._exceptions import CheckpointError
    from models.checkpoint import load_checkpoint

    try:
        _, info = load_checkpoint(ctx.models.reference().checkpoint)
    except (CheckpointError, OSError) as exc:
        raise JobError(f"the frame pool needs a model to serve: {exc}") from exc
    return info.input_size


def import_frames(ctx: JobContext, upload_id: str, camera: str | None = None) -> JobOutcome:
    """Add the images of staged archive ``upload_id`` to the frame pool."""
    settings, storage = ctx.settings, ctx.storage
    path = staged_archive(storage, upload_id)
    if not path.is_file():
        raise JobError(
            f"the archive of import {upload_id} is gone (swept after "
            "ATCON_TMP_MAX_AGE_S, or already imported); upload it again"
        )
    pool = storage.frame_pool(_input_size(ctx), settings.pool_val_fraction)

    def progress(done: int, total: int) -> None:
        ctx.progress(done / max(total, 1), {"entries_done": done, "entries": total})

    try:
        with open(path, "rb") as fh:
            result = pool.import_zip(
                fh,
                camera=camera,
                max_entries=settings.zip_max_entries,
                max_total_bytes=settings.zip_max_total_bytes,
                key=upload_id,
                progress=progress,
            )
    except InvalidFrameError as exc:  # the API checked it; a changed file, or a bug
        discard_archive(storage, upload_id)
        raise JobError(f"the archive cannot be imported: {exc}") from exc
    refused = [{"name": name, "reason": reason} for name, reason in result.rejected]
    report = {"accepted": len(result.accepted), "rejected": refused}
    ctx.progress(1.0, report)
    discard_archive(storage, upload_id)
    if not result.accepted:
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in refused[:_REASONS_IN_ERROR])
        more = f"; and {len(refused) - _REASONS_IN_ERROR} more" if len(refused) > 5 else ""
        raise JobError(
            f"no entry of the zip archive is a usable image ({len(refused)} refused: "
            f"{reasons}{more}); send PNG or JPEG images"
        )
    logger.info(
        "import %s: %d frames added, %d entries refused",
        upload_id,
        len(result.accepted),
        len(refused),
    )
    return JobOutcome({**report, "frame_ids": result.accepted}, frames=len(result.accepted))
