"""The worker side of the service: queue, runtime, serving, video, detection, frame
pool, training and fine-tuning (see docs/architecture.md).

The package's exceptions (:mod:`worker._exceptions`, the tree) are its public names
here: ``from worker import NoModelError``. The service imports them from this package,
never from the private module. Importing ``worker`` imports nothing heavier than them
(no torch, no PyAV).
"""

from . import _exceptions
from ._exceptions import *  # noqa: F403 (the tree is the package's public names)

__all__ = [name for name in _exceptions.__all__ if name != "AtconError"]
