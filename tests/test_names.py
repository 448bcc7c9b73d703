"""``study.names`` (importable without TensorFlow) against the registries it names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from study import names
from study.embeddings import EMBEDDINGS
from study.runner import PRUNERS, SAMPLERS
from study.towers import ACTIVATIONS, BODIES
from study.train import OPTIMIZERS


@pytest.mark.parametrize(
    ("listed", "registry"),
    [
        (names.ACTIVATIONS, ACTIVATIONS),
        (names.BODIES, BODIES),
        (names.EMBEDDINGS, EMBEDDINGS),
        (names.OPTIMIZERS, OPTIMIZERS),
        (names.SAMPLERS, SAMPLERS),
        (names.PRUNERS, PRUNERS),
    ],
    ids=["activations", "bodies", "embeddings", "optimizers", "samplers", "pruners"],
)
def test_names_are_the_registry_keys(listed: tuple[str, ...], registry: dict) -> None:
    assert listed == tuple(registry)


def test_validating_a_run_does_not_import_tensorflow(tmp_path) -> None:
    """What the parent of ``run --jobs N`` does before its workers train: no TensorFlow import (see study.names)."""
    code = (
        "import io, sys\n"
        "from study.cli import build_parser, run_settings_from_args\n"
        "from study.runner import finish, prepare\n"
        f"argv = ['run', '--trials', '2', '--space', 'default', '--storage', 'sqlite:///{tmp_path}/s.db', '--no-test']\n"
        "settings = run_settings_from_args(build_parser().parse_args(argv))\n"
        "finish(prepare(settings, out=io.StringIO()), out=io.StringIO())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
