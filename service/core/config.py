"""The API's settings: the one ``ATCON_`` settings class the workers use too."""

from __future__ import annotations

from worker.settings import Role, Settings, TokenEntry, get_settings

__all__ = ["Role", "Settings", "TokenEntry", "get_settings"]
