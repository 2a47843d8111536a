"""Checks made before a distributed capture creates its run: can the cluster run it at all?

Every worker builds the model, opens the data files and reaches the store **itself**, so a
path that exists only on the coordinator, or a store only the coordinator can reach, would
otherwise fail deep inside a worker's range, after the run was created.  One small task per
worker tries each of these first and the coordinator reports the first failure in one line
naming the worker (issue 18).  Building the model here is not wasted: the worker caches it
for its ranges (``core.distributed._MODELS``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensortap.core.errors import (
    ClusterError,
    DataError,
    ResumeMismatchError,
    StorageError,
    TensortapError,
)
from tensortap.core.store.storage import open_location

__all__ = ["WorkerCheck", "check_client", "check_workers"]

#: Seconds to wait for a first worker when the cluster has none yet (an adaptive
#: dask-jobqueue cluster starts its workers only once jobs run).
WAIT_FOR_WORKERS_S = 120.0


@dataclass(frozen=True, slots=True)
class WorkerCheck:
    """What each worker must reach: the store, and the ``.npy`` inputs it opens by path.

    Attributes
    ----------
    store : str
        Absolute folder path or URL of the run.
    storage_options : dict or None
        fsspec options for URLs.
    data : dict
        ``{input name: (absolute path, shape)}`` of the inputs read by path on the workers.
    """

    store: str
    storage_options: dict[str, Any] | None = None
    data: Mapping[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)


def check_client(client: Any) -> None:
    """Refuse a client that is closed (or closing) with the fix, before anything is written.

    Raises
    ------
    ClusterError
        The client's ``status`` is ``"closed"``, ``"closing"`` or ``"failed"``.
    """
    status = str(getattr(client, "status", "running"))
    if status in ("closed", "closing", "failed"):
        raise ClusterError(
            f"the Dask client passed as client= is {status}; pass an open one "
            "(distributed.Client(cluster) outside a closed `with` block), or client=None "
            "to start a local cluster for this call"
        )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_store(where: str, url: str, storage_options: dict[str, Any] | None) -> None:
    if "://" in url:
        try:
            open_location(url, storage_options, read_only=True)  # reaches the bucket
        except StorageError as err:
            raise StorageError(
                f"worker {where} cannot reach the store: {err}; every worker needs the "
                "endpoint and credentials in storage_options (workers do not see the "
                "coordinator's environment)"
            ) from err
        return
    folder = _nearest_existing(Path(url))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise StorageError(
            f"worker {where} cannot write the store {url!r} (its nearest existing folder "
            f"there is {str(folder)!r}, not writable); use a folder every worker mounts at "
            "the same path, or an s3:// URL"
        )


def _check_here(build_model: Callable[[], Any], check: WorkerCheck) -> None:
    """Worker task: build the model, open the data files, reach the store."""
    from distributed import get_worker

    where = get_worker().address
    try:
        build_model()
    except ResumeMismatchError as err:
        raise ClusterError(f"worker {where}: {err}") from err
    except Exception as err:
        raise ClusterError(
            f"worker {where} cannot build the model ({type(err).__name__}: {err}); each "
            "worker calls model_factory itself: load the model from an absolute path every "
            "worker can read (a shared folder, object storage) and keep the factory's "
            "module importable there"
        ) from err
    for name, (path, shape) in check.data.items():
        try:
            found = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError) as err:
            raise DataError(
                f"worker {where} cannot read the data file {path!r} of input {name!r} "
                f"({err}); put it on a folder every worker mounts at the same path, or pass "
                "the array itself (its slices then travel with the tasks)"
            ) from err
        if tuple(found) != tuple(shape):
            raise DataError(
                f"worker {where} reads {path!r} with shape {tuple(found)}, the coordinator "
                f"with {tuple(shape)}; every worker must see the same file"
            )
    _check_store(where, check.store, check.storage_options)


def check_workers(client: Any, build_model: Callable[[], Any], check: WorkerCheck) -> int:
    """Run :func:`_check_here` once per worker; raise the first failure.

    Parameters
    ----------
    client : distributed.Client
        An open client.
    build_model : callable
        Picklable; builds (and caches) the model on the worker, checking its fingerprint.
    check : WorkerCheck
        The store and data files to reach.

    Returns
    -------
    int
        The number of workers checked.

    Raises
    ------
    ClusterError
        No worker joined within :data:`WAIT_FOR_WORKERS_S`, or a worker cannot build the
        model.
    DataError, StorageError
        A worker cannot read a data file or reach the store.
    """
    from distributed import as_completed

    workers = list(client.scheduler_info().get("workers", {}))
    if not workers:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError as err:
            raise ClusterError(
                f"the Dask cluster has no worker after {WAIT_FOR_WORKERS_S:.0f} s; scale it "
                "up (cluster.scale(n)) before capturing"
            ) from err
        workers = list(client.scheduler_info().get("workers", {}))
    futures = [
        # allow_other_workers: a worker that leaves meanwhile must not strand its check.
        client.submit(
            _check_here,
            build_model,
            check,
            workers=[address],
            allow_other_workers=True,
            pure=False,
        )
        for address in workers
    ]
    errors: list[BaseException] = []
    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        if future.status == "error":
            errors.append(future.exception())
    if errors:
        # Our own errors first: they carry the fix; anything else is wrapped with the worker.
        ours = [e for e in errors if isinstance(e, TensortapError)]
        if ours:
            raise ours[0]
        raise ClusterError(f"a worker failed its set-up check: {errors[0]!r}") from errors[0]
    return len(workers)
