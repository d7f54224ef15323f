"""Workers sweep ``tmp/`` of orphaned staging, not only the API when it starts.

A worker killed mid-job leaves what it staged in ``tmp/`` (``results-<video_id>-*``:
maps and masked frames of a patient video, sometimes thousands of files), and a
fine-tune killed mid-export its frame links. Every worker process runs
:func:`start_tmp_sweeper`: each ``ATCON_TMP_SWEEP_INTERVAL_S`` it removes the entries
in which nothing was modified for ``ATCON_TMP_MAX_AGE_S`` (a job in progress keeps
writing into its own folder, so it is never swept from under it). The same pass
removes pool frames whose video is gone
(:func:`worker.deletion.purge_orphaned_frames`): left by deletions made before
deletion took the frames along.
"""

from __future__ import annotations

import logging
import threading

from .._exceptions import StorageError
from ..deletion import purge_orphaned_frames
from ..settings import Settings
from ..storage import Storage

__all__ = ["start_tmp_sweeper", "sweep_tmp"]

logger = logging.getLogger(__name__)


def sweep_tmp(storage: Storage, max_age_s: float) -> int:
    """Remove the ``tmp/`` entries untouched for ``max_age_s``; return how many went."""
    if max_age_s <= 0:
        raise ValueError(f"max_age_s must be positive, got {max_age_s}")
    removed = storage.clean_tmp(older_than_s=max_age_s)
    if removed:
        logger.info("swept %d orphaned entr%s from tmp/", removed, "y" if removed == 1 else "ies")
    return removed


def start_tmp_sweeper(
    storage: Storage, settings: Settings, stop: threading.Event
) -> threading.Thread:
    """Sweep now and then every ``settings.tmp_sweep_interval_s`` until ``stop`` is set."""

    def loop() -> None:
        while True:
            try:
                sweep_tmp(storage, settings.tmp_max_age_s)
                purge_orphaned_frames(storage)
                storage.purge_orphaned_copies()
            except (OSError, StorageError) as exc:  # the volume or store away: next time
                logger.warning("tmp/ not swept now: %s", exc)
            if stop.wait(settings.tmp_sweep_interval_s):
                return

    thread = threading.Thread(target=loop, name="tmp-sweeper", daemon=True)
    thread.start()
    return thread
