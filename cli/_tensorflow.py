"""TensorFlow imported without its C++ start-up chatter burying a command's one line."""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["import_tensorflow_quietly"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and probe its devices) with stderr muted, when it is installed.

    Its C++ runtime prints oneDNN and CUDA notices through absl *before* logging is set
    up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; they would bury the one line a
    command prints.  An import error still raises (and prints) after stderr is back.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe prints its own notice
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
