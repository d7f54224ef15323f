"""One router per resource: videos, reviews, jobs, health (healthz, readyz, metrics)."""

from . import health, jobs, reviews, videos

__all__ = ["health", "jobs", "reviews", "videos"]
