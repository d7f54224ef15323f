"""Small images of an event's peak frame for lists (the events inbox).

A thumbnail is made once from the peak frame PNG the detector wrote (``maps/<stem>_frame.png``)
and kept in the video's cache folder (:meth:`worker.storage.Storage.cache_dir`), so it
is deleted with the video. Its name carries a digest of what it was made from (the
event, its peak and the results' creation time), so a re-detected video never shows
the thumbnail of an older result.
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any

from PIL import Image

from .._exceptions import EventNotFoundError, NoResultsError, VideoNotFoundError
from ..detection.results import safe_stem
from ..storage import Storage, atomic_write_bytes

__all__ = ["THUMBNAIL_WIDTH", "event_thumbnail"]

logger = logging.getLogger(__name__)

#: pixels; the inbox shows them at half this width on high-density screens
THUMBNAIL_WIDTH = 160


def _key(events: dict[str, Any], event: dict[str, Any], width: int) -> str:
    parts = (event.get("id"), event.get("label"), event.get("peak_s"), events.get("created_at"))
    digest = hashlib.sha256(repr((parts, width)).encode()).hexdigest()[:16]
    return f"thumb-{safe_stem(str(event.get('id')))}-{digest}.jpg"


def event_thumbnail(
    storage: Storage,
    video_id: str,
    event_id: str,
    events: dict[str, Any] | None = None,
    width: int = THUMBNAIL_WIDTH,
) -> bytes | None:
    """The JPEG thumbnail of an event's peak frame, made on first use and cached; None
    when the results hold no peak frame for it.

    Raises ``VideoNotFoundError``, ``NoResultsError`` and ``EventNotFoundError``.
    """
    if width < 8:
        raise ValueError(f"width must be at least 8 pixels, got {width}")
    storage.get_video(video_id)
    if events is None:
        events = storage.read_events(video_id)
    if events is None:
        raise NoResultsError(f"video {video_id} has no results yet")
    event = next(
        (e for e in events.get("events") or [] if isinstance(e, dict) and e.get("id") == event_id),
        None,
    )
    if event is None:
        raise EventNotFoundError(f"video {video_id} has no event {event_id}")
    maps = event.get("maps")
    name = maps.get("frame") if isinstance(maps, dict) else None
    if not isinstance(name, str):
        return None
    target = storage.cache_dir(video_id) / _key(events, event, width)
    try:
        return target.read_bytes()
    except FileNotFoundError:
        pass
    source = storage.result_file(video_id, name)
    try:
        with Image.open(source) as image:
            rgb = image.convert("RGB")
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("peak frame of event %s of video %s unreadable: %s", event_id, video_id, exc)
        return None
    height = max(1, round(rgb.height * width / max(rgb.width, 1)))
    buffer = io.BytesIO()
    rgb.resize((width, height), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=80)
    data = buffer.getvalue()
    try:
        storage.ensure_cache_dir(video_id)
        atomic_write_bytes(target, data)
    except (
        OSError,
        VideoNotFoundError,
    ) as exc:  # deleted meanwhile, or a full disk: answer without caching
        logger.warning("thumbnail of an event of video %s not cached: %s", video_id, exc)
    return data
