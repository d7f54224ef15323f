"""The frame pool: frames and their records (in the data directory or the object store),
clinicians' reviews, the scoring job, zip imports.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .frames import (
        NO_CAMERA,
        EmptyZipError,
        ExportedFrames,
        FramePool,
        FrameRecord,
        InvalidFrameError,
        UnknownFrameError,
        ZipImportResult,
        ZipTooLargeError,
        check_zip,
    )
    from .frames_s3 import (
        StoredFramePool,
    )
    from .importer import (
        IMPORT,
        discard_archive,
        import_frames,
        stage_archive,
        staged_archive,
    )
    from .reviews import (
        REVIEWS_NAME,
        EventReview,
        ReviewChange,
        Verdict,
        find_event,
        frame_pool,
        history_of,
        read_history,
        read_reviews,
        review_event,
        review_of,
        undo_review,
    )
    from .scoring import (
        FRAME_MAP_KINDS,
        FRAMES,
        MAX_FRAMES_PER_JOB,
        frame_map_path,
        request_scoring,
        score_frames,
    )

__all__ = [
    "FRAMES",
    "FRAME_MAP_KINDS",
    "IMPORT",
    "MAX_FRAMES_PER_JOB",
    "NO_CAMERA",
    "REVIEWS_NAME",
    "EmptyZipError",
    "EventReview",
    "ExportedFrames",
    "FramePool",
    "FrameRecord",
    "InvalidFrameError",
    "ReviewChange",
    "StoredFramePool",
    "UnknownFrameError",
    "Verdict",
    "ZipImportResult",
    "ZipTooLargeError",
    "check_zip",
    "discard_archive",
    "find_event",
    "frame_map_path",
    "frame_pool",
    "history_of",
    "import_frames",
    "read_history",
    "read_reviews",
    "request_scoring",
    "review_event",
    "review_of",
    "score_frames",
    "stage_archive",
    "staged_archive",
    "undo_review",
]

#: public name -> the module that defines it
_MODULES = {
    "EmptyZipError": "frames",
    "EventReview": "reviews",
    "ExportedFrames": "frames",
    "FRAMES": "scoring",
    "FRAME_MAP_KINDS": "scoring",
    "FramePool": "frames",
    "FrameRecord": "frames",
    "IMPORT": "importer",
    "InvalidFrameError": "frames",
    "MAX_FRAMES_PER_JOB": "scoring",
    "NO_CAMERA": "frames",
    "REVIEWS_NAME": "reviews",
    "ReviewChange": "reviews",
    "StoredFramePool": "frames_s3",
    "UnknownFrameError": "frames",
    "Verdict": "reviews",
    "ZipImportResult": "frames",
    "ZipTooLargeError": "frames",
    "check_zip": "frames",
    "discard_archive": "importer",
    "find_event": "reviews",
    "frame_map_path": "scoring",
    "frame_pool": "reviews",
    "history_of": "reviews",
    "import_frames": "importer",
    "read_history": "reviews",
    "read_reviews": "reviews",
    "request_scoring": "scoring",
    "review_event": "reviews",
    "review_of": "reviews",
    "score_frames": "scoring",
    "stage_archive": "importer",
    "staged_archive": "importer",
    "undo_review": "reviews",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
