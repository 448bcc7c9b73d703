"""Tower Study: hyperparameter-search studies for two-tower TFRS retrieval models."""

from __future__ import annotations

import os

# TFRS needs Keras 2 (tf-keras). This must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
