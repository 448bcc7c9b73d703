from __future__ import annotations

import os
import sys

from study import cli
from study.workers import worker_number

code = cli.main()
if worker_number() is not None:
    # A --jobs worker: everything it did is committed to the storage, and the parent waits for it to exit, so skip
    # the interpreter's and TensorFlow's teardown (about a second).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
