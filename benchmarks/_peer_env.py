"""The peers' virtual environment: keract on legacy ``tf_keras``, TorchLens and Captum.

Installed the way their users would, with pip, but apart from tensortap's own environment:
keract needs Keras 2 (``tf_keras``) and TorchLens patches torch globally.  The environment
sees tensortap's packages (TensorFlow, torch) through a ``.pth`` file, so the same
TensorFlow and torch builds run on both sides and nothing is downloaded twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

PEERS_VENV = Path(__file__).resolve().parent / "out" / "peers-venv"
#: Pinned like constraints.txt pins tensortap's own: a re-run measures the same code.
PEER_PACKAGES = ("tf_keras==2.21.0", "keract==4.5.2", "torchlens==2.36.1", "captum==0.9.0")


def peer_python() -> Path:
    """The peers' interpreter, creating the environment on first use (about 30 s)."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(PEER_PACKAGES):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "tensortap-base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_PACKAGES],
        check=True,
    )
    stamp.write_text("\n".join(PEER_PACKAGES))
    return python


def run_peer(script: str, *args: Any, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``benchmarks/peers/<script>`` in the peers' environment; its last line as JSON."""
    path = Path(__file__).resolve().parent / "peers" / script
    done = subprocess.run(
        [str(peer_python()), str(path), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_error(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in the peers' environment; the last line of the error it raises, or ''."""
    done = subprocess.run(
        [str(peer_python()), "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=600,
    )
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return "" if done.returncode == 0 else (lines[-1] if lines else f"exit {done.returncode}")
