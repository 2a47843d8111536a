"""Capture-time attributions with Dask workers (issue 17): ``capture_distributed(attributions=)``.

A real two-process ``LocalCluster`` (PyTorch workers: a restarted worker imports it in about
a second).  Each worker computes the attributions of its blocks in its own capture step;
the run must equal a single-process ``tt.capture`` of the same data bit for bit — SmoothGrad
too, whose noise is drawn per global sample index, not per worker or batch — pass
``verify``, and a capture whose range killed its workers must resume to that same run.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import tensortap as tt

pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # spawned workers inherit sys.path and unpickle from here
from scale_models import images_with_ids, scale_net  # noqa: E402

N, B = 64, 8  # 8 blocks: block 0 on the coordinator, ranges [1,3) [3,5) [5,7) [7,8) on workers
LAYERS = ["1", "5"]  # conv, linear
METHODS = ["saliency", "gradient_x_input", "smoothgrad", "integrated_gradients"]
# sigma 0.05: the noise never moves the id pixel (channel 0, pixel 0) to another id, which
# the killing model below reads.
OPTIONS = {"n_samples": 4, "sigma": 0.05, "seed": 7, "steps": 8}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # Not distributed_models.two_worker_client: that module imports TensorFlow, which these
    # torch workers do not need.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    x = images_with_ids(N)
    folder = tmp_path_factory.mktemp("data")
    np.save(folder / "x.npy", x)
    return {"x": x, "y": np.arange(N) % 3, "x_path": str(folder / "x.npy")}


COMMON: dict[str, Any] = dict(
    layers=LAYERS,
    gradients=True,
    target="label",
    batch_size=B,
    block_size=B,  # one batch a block: the ranges above count batches
    progress=False,
    attribution_options=OPTIONS,
)


@pytest.fixture(scope="module")
def reference(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The single-process capture of the same data, with the same attributions."""
    path = tmp_path_factory.mktemp("reference") / "single.zarr"
    return tt.capture(
        scale_net(), (data["x"], data["y"]), store=path, attributions=METHODS, **COMMON
    )


def _assert_same(run: Any, reference: Any, methods: list[str]) -> None:
    np.testing.assert_array_equal(run.sample_indices, np.arange(N))
    np.testing.assert_array_equal(run.tree["sample"].values, np.arange(N))  # each sample once
    assert run.attribution_names == tuple(methods)
    assert run.attrs["attributions"]["methods"] == methods
    for method in methods:
        got, want = run.attributions(method), reference.attributions(method)
        assert got.dims == want.dims == ("sample", "channel", "height", "width")
        assert got.attrs == want.attrs  # the method's parameters, as stored
        np.testing.assert_array_equal(got.values, want.values)
    for key in LAYERS:
        np.testing.assert_array_equal(run.activation(key).values, reference.activation(key).values)
        np.testing.assert_array_equal(run.gradient(key).values, reference.gradient(key).values)
    np.testing.assert_array_equal(run.outputs().values, reference.outputs().values)


def test_distributed_attributions_equal_a_single_process_capture(
    client: Any, data: dict[str, Any], reference: Any, tmp_path: Path
) -> None:
    path = tmp_path / "dist.zarr"
    run = tt.capture_distributed(
        scale_net,
        (data["x_path"], data["y"]),
        path,
        client=client,
        ranges_per_worker=2,
        attributions=METHODS,
        **COMMON,
    )
    assert run.status == "complete" and run.samples == N
    _assert_same(run, reference, METHODS)
    # SmoothGrad really is noisy (not saliency under another name), and plain xarray reads it.
    assert not np.array_equal(
        run.attributions("smoothgrad").values, run.attributions("saliency").values
    )
    tree = xr.open_datatree(path, engine="zarr", consolidated=False)
    assert tree["attributions/smoothgrad"].shape == (N, 3, 8, 8)
    report = tt.verify(path)  # every chunk, the workers' attribution chunks too, checksummed
    assert report.ok, report


def test_killed_distributed_capture_resumes_its_attributions(
    data: dict[str, Any], reference: Any, tmp_path: Path
) -> None:
    """Workers SIGKILLed by one range: the run ends failed with every other block, then a
    resume captures only the lost blocks, each sample once, equal to the single process."""
    import dask.config

    # Without Integrated Gradients: its path points scale the id pixel the killing model
    # reads, so another block's path could reach the poisoned id.
    methods = METHODS[:3]
    path = tmp_path / "killed.zarr"
    poison = 5 * B + 3  # block 5, range [5, 7): its worker dies there, every time
    common = dict(COMMON, ranges_per_worker=2)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as crashing,
    ):
        with pytest.raises(tt.ClusterError, match=r"samples 40:56 were lost with their worker"):
            tt.capture_distributed(
                functools.partial(scale_net, kill_at=poison),
                (data["x_path"], data["y"]),
                path,
                client=crashing,
                attributions=methods,
                **common,
            )
        failed = tt.open_run(path)
        assert failed.status == "failed"
        kept = set(failed.sample_indices.tolist())
        assert kept == set(range(N)) - set(range(5 * B, 7 * B))
        np.testing.assert_array_equal(
            failed.attributions("smoothgrad").values,
            reference.attributions("smoothgrad").values[sorted(kept)],
        )
        run = tt.capture_distributed(
            scale_net,
            (data["x_path"], data["y"]),
            path,
            client=crashing,
            resume=True,
            attributions=methods,
            **common,
        )
    assert run.status == "complete" and run.samples == N
    _assert_same(tt.open_run(path), reference, methods)
    assert tt.verify(path).ok


def test_resume_with_other_attributions_is_refused(
    client: Any, data: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "run.zarr"
    first = dict(COMMON, attribution_options={**OPTIONS})
    labelled = (data["x_path"], data["y"])
    tt.capture_distributed(
        scale_net, labelled, path, client=client, attributions=["saliency"], **first
    )
    with pytest.raises(tt.ResumeMismatchError, match="attributions"):
        tt.capture_distributed(
            scale_net,
            labelled,
            path,
            client=client,
            resume=True,
            attributions=["smoothgrad"],
            **COMMON,
        )
    assert tt.open_run(path).attribution_names == ("saliency",)


def test_cli_capture_workers_attributions(data: dict[str, Any], tmp_path: Path) -> None:
    """``tensortap capture --workers 2 --attributions``: the same run as the single process."""
    import torch

    model_path = tmp_path / "net.pt"
    torch.save(scale_net(), model_path)  # a whole nn.Module: its class is in scale_models
    out = tmp_path / "cli.zarr"
    argv = [sys.executable, "-m", "tensortap", "capture", str(model_path), data["x_path"]]
    argv += ["-o", str(out), "--workers", "2", "--layers", "1", "--layers", "5", "--gradients"]
    argv += ["--batch-size", str(B), "--block-size", str(B), "--no-progress"]
    argv += ["--attributions", "saliency,gxi,sg,ig", "--sg-samples", "4", "--sg-sigma", "0.05"]
    argv += ["--seed", "7", "--ig-steps", "8"]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}  # the workers unpickle the net from there
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    run = tt.open_run(out)
    assert run.status == "complete" and run.attribution_names == tuple(METHODS)
    # The CLI's target is "predicted"; the reference's is "label": compare with a
    # single-process capture of the CLI's own settings.
    single = tt.capture(
        scale_net(),
        data["x"],
        store=tmp_path / "single.zarr",
        **dict(COMMON, target="predicted"),
        attributions=METHODS,
    )
    for method in METHODS:
        np.testing.assert_array_equal(
            run.attributions(method).values, single.attributions(method).values
        )
