"""Exceptions raised by the ``models`` package.

::

    AtconError
     +-- ModelError (ValueError)
     |    +-- LayerNotFoundError         no spatial feature stage, or a layer not in the model
     |    +-- UnsupportedActivationError an activation autograd cannot differentiate twice
     |    +-- MapTooSmallError           a Grad-CAM layer whose maps are too small for ATCON
     +-- CheckpointError                 missing, unreadable or mismatched checkpoint
     +-- TrainingError                   a run that cannot go on (NaN loss, collapse, no data)
          +-- ResumeError                  a saved training state that cannot be resumed
                                           (none, another run's settings, unreadable)

Bad arguments raise plain ``ValueError``/``TypeError`` naming the argument.
"""

from __future__ import annotations

__all__ = [
    "AtconError",
    "CheckpointError",
    "LayerNotFoundError",
    "MapTooSmallError",
    "ModelError",
    "ResumeError",
    "TrainingError",
    "UnsupportedActivationError",
]


class AtconError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelError(AtconError, ValueError):
    """The model cannot be used the way it was asked to be used."""


class LayerNotFoundError(ModelError):
    """No suitable target layer: none could be found, or the one given is not in the model."""


class UnsupportedActivationError(ModelError):
    """The model uses an activation whose second derivative autograd does not implement."""


class MapTooSmallError(ModelError):
    """The Grad-CAM layer's maps have too few pixels for the ATCON loss at this input size.

    Raised before the first step (:func:`models.atcon.check_map_size`), not as a NaN
    loss later; the message names the layer, the map size and the fix.
    """


class CheckpointError(AtconError):
    """A checkpoint is missing, unreadable, or does not fit the data it is used with."""


class TrainingError(AtconError):
    """Training cannot go on (loss became NaN, the model collapsed, no data)."""


class ResumeError(TrainingError):
    """A run cannot resume: nothing was saved, or the saved state belongs to a run with
    other settings, or it cannot be read (:mod:`models.resume`)."""
