"""Videos: probing, decoding, prefetching, memory, and the clips and thumbnails cut from
them.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .clips import (
        COPY,
        REENCODE,
        Clip,
        clip_window,
        cut_clip,
        event_clip,
    )
    from .decode import (
        DEFAULT_MAX_SIDE,
        DecodeStats,
        FrameBatch,
        FrameSampler,
        VideoInfo,
        extract_frames,
    )
    from .memory import (
        release_free_memory,
    )
    from .prefetch import (
        Prefetcher,
    )
    from .thumbnails import (
        THUMBNAIL_WIDTH,
        event_thumbnail,
    )

__all__ = [
    "COPY",
    "DEFAULT_MAX_SIDE",
    "REENCODE",
    "THUMBNAIL_WIDTH",
    "Clip",
    "DecodeStats",
    "FrameBatch",
    "FrameSampler",
    "Prefetcher",
    "VideoInfo",
    "clip_window",
    "cut_clip",
    "event_clip",
    "event_thumbnail",
    "extract_frames",
    "release_free_memory",
]

#: public name -> the module that defines it
_MODULES = {
    "COPY": "clips",
    "Clip": "clips",
    "DEFAULT_MAX_SIDE": "decode",
    "DecodeStats": "decode",
    "FrameBatch": "decode",
    "FrameSampler": "decode",
    "Prefetcher": "prefetch",
    "REENCODE": "clips",
    "THUMBNAIL_WIDTH": "thumbnails",
    "VideoInfo": "decode",
    "clip_window": "clips",
    "cut_clip": "clips",
    "event_clip": "clips",
    "event_thumbnail": "thumbnails",
    "extract_frames": "decode",
    "release_free_memory": "memory",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
