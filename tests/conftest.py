"""Shared pytest set-up: quiet TensorFlow, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-stable float32 references
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
