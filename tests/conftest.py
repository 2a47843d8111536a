"""Shared pytest set-up: quiet TensorFlow, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-stable float32 references
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# -- headless Chromium (Debian's package; never `playwright install`) ---------------------
import os.path  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A Playwright Chromium browser, skipped with the fix when Chromium is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make chromium` installs it")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# -- S3 on loopback (moto's ThreadedMotoServer, as zarr-python's own tests do) ------------
@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, Any]]:
    """``storage_options`` for a moto S3 server on 127.0.0.1 (OS-chosen port), bucket ``runs``.

    One server for the whole session: moto keeps its buckets in process-wide state, so two
    servers in one process would share (and collide on) them anyway.  Credentials travel in
    the options because Dask worker processes do not see this process's environment.
    """
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        server.start()
        host, port = server.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
        s3fs.S3FileSystem(**options, skip_instance_cache=True).mkdir("runs")
        try:
            yield options
        finally:
            server.stop()
