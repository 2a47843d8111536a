"""Exceptions raised by tensortap.

Every error subclasses :class:`TensortapError` *and* the builtin it refines, so
callers can catch either (the zarr-python convention: ``NodeNotFoundError(BaseZarrError,
FileNotFoundError)``).  Messages name what was received, what is allowed, and the fix,
in one line: the command line prints ``str(err)`` as it is and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "ClusterError",
    "CorruptRunError",
    "DataError",
    "DimsError",
    "EmptyDataError",
    "InputMismatchError",
    "LayerNotFoundError",
    "ModelNotBuiltError",
    "NoGradientsError",
    "NonFiniteInputWarning",
    "OptionError",
    "ResumeMismatchError",
    "RunExistsError",
    "RunNotFoundError",
    "StorageError",
    "TargetError",
    "TensortapError",
    "UnsupportedModelError",
    "ViewError",
]


class TensortapError(Exception):
    """Base class of every error tensortap raises on purpose."""


class BackendNotFoundError(TensortapError, LookupError):
    """No installed backend accepts the model, or a named backend is unknown."""


class UnsupportedModelError(TensortapError, TypeError):
    """The object is not a model any backend can capture."""


class ModelNotBuiltError(TensortapError, ValueError):
    """The model has no known input shape yet (never called or built)."""


class LayerNotFoundError(TensortapError, KeyError):
    """A layer selection names nothing in the capture graph."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InputMismatchError(TensortapError, ValueError):
    """Input data whose shape, dtype or structure does not fit the model."""


class DataError(TensortapError, ValueError):
    """Data that cannot be read or turned into batches (bad file, wrong labels...)."""


class EmptyDataError(DataError):
    """The data holds no sample."""


class TargetError(TensortapError, ValueError):
    """A gradient target that does not fit the model or the labels."""


class NoGradientsError(TensortapError, ValueError):
    """A computation needs gradients that the run did not capture."""


class RunExistsError(TensortapError, FileExistsError):
    """The output location already holds data and neither resume nor overwrite was asked."""


class RunNotFoundError(TensortapError, FileNotFoundError):
    """The location holds no tensortap run."""


class CorruptRunError(TensortapError, ValueError):
    """The run's metadata or arrays are damaged or truncated."""


class OptionError(TensortapError, ValueError, TypeError):
    """An argument of the wrong type or out of its allowed values (``batch_size=2.5``,
    ``dtype="int8"``).  Also a ``TypeError``, which Python raises for wrong types."""


class NonFiniteInputWarning(UserWarning):
    """The input data held NaN or infinite values (captured as given; see ``strict``)."""


class ResumeMismatchError(TensortapError, ValueError):
    """``resume=True`` on a run made with another model, layer set or settings."""


class StorageError(TensortapError, OSError):
    """The store cannot be written or reached (read-only folder, missing bucket...)."""


class ViewError(TensortapError, ValueError):
    """A view was asked for something the run cannot show (sample or channel out of range...)."""


class DimsError(TensortapError, ValueError):
    """A ``dims=`` override that does not fit the layer (wrong count, repeated names)."""


class ClusterError(TensortapError, RuntimeError):
    """The Dask cluster cannot run a distributed capture or analysis (a closed client, a
    worker that cannot build the model, a range that kept killing its workers)."""
