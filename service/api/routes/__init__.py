"""One router per resource: videos, jobs, health (healthz, readyz, metrics)."""

from . import health, jobs, videos

__all__ = ["health", "jobs", "videos"]
