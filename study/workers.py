"""``run --jobs N``: N worker processes on this machine sharing one study.

The parent starts N copies of the same ``run`` command with ``--jobs 1`` at once, so the workers import TensorFlow
while the parent validates everything and creates the study; each worker then waits on its stdin for the parent's
``go`` (so workers never race to create the study, and a bad input is reported once, by the parent, after which the
waiting workers are stopped without a word). Each worker limits TensorFlow to ``cores // N`` intra-op
threads (so N workers do not oversubscribe the cores), prints its finished trials prefixed with its number, and
stops when the study holds ``--trials`` finished trials (the count is read from the storage, so it is exact across
workers). A worker that ran ``--recycle-after`` trials (default 50) leaves and a fresh process takes its place:
TensorFlow's XLA cache never evicts what a process compiled. When all workers are done, the parent scores the best
trial on the test split. Ctrl-C stops every worker (each marks its running trial FAIL) and prints how to resume.

Storage: SQLite is opened with WAL and a 60 s busy timeout, which keeps a handful of local writers free of
"database is locked"; ``--storage journal:PATH`` (Optuna's JournalStorage on a file) is the alternative Optuna
recommends for many local processes, and PostgreSQL/MySQL for many machines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from study.errors import EXIT_INTERRUPTED

ENV_WORKER = "TOWER_STUDY_WORKER"
# A worker that ran its --recycle-after trials exits with this code (EX_TEMPFAIL) and its parent starts a fresh one.
EXIT_RECYCLE = 75
# --recycle-after's default with --jobs N > 1: TensorFlow's XLA cache never evicts, so a process keeps ~10-50 MB of
# every trial it compiled (~0.5-2.5 GB per 50 trials), and a fresh process costs ~5 s of start-up per 50 trials.
DEFAULT_RECYCLE_AFTER = 50
# With --jobs 1 (and no --recycle-after), the run replaces itself by a fresh process (exec, same PID) after this many
# trials: a 100-trial run then restarts 9 times (~5-10 s each: TensorFlow import, data); a default-space process
# peaked at 1972 MiB after 10 trials and 2412 MiB after 20 (docs/benchmarks.md, "Memory of long runs").
DEFAULT_RESTART_AFTER = 10
ENV_RESTART_AFTER = "TOWER_STUDY_RESTART_AFTER"  # overrides DEFAULT_RESTART_AFTER (0 = never)
ENV_ELAPSED = "TOWER_STUDY_ELAPSED"  # wall seconds of the run before its last restart
ENV_THREADS = "TOWER_STUDY_THREADS"
ENV_WAIT = "TOWER_STUDY_WAIT_FOR_PARENT"
ENV_GENERATION = "TOWER_STUDY_WORKER_GENERATION"  # 0 for the first process under a label, +1 for each replacement
ENV_PARENT = "TOWER_STUDY_PARENT_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_number() -> str | None:
    """The worker label (``"1"`` … ``"N"``) when this process is a ``--jobs`` worker."""
    return os.environ.get(ENV_WORKER)


def die_with_parent() -> None:
    """In a ``--jobs`` worker: be sent SIGTERM when the parent process dies, even by SIGKILL.

    Workers run in a session of their own (Ctrl-C reaches the parent only), so nothing else would stop them: an
    orphaned worker would train on, and nobody would score the study on the test split. SIGTERM stops a worker as
    Ctrl-C does (its running trial is marked FAIL). Linux's ``prctl(PR_SET_PDEATHSIG)`` does it at once; elsewhere
    :func:`parent_gone` is checked between trials.
    """
    parent = os.environ.get(ENV_PARENT)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent_gone():  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def parent_gone() -> bool:
    """Whether this ``--jobs`` worker's parent has died (the worker was re-parented)."""
    parent = os.environ.get(ENV_PARENT)
    return bool(parent) and os.getppid() != int(parent)


def restart_after_default() -> int:
    """Trials after which a ``--jobs 1`` run restarts itself: ``$TOWER_STUDY_RESTART_AFTER`` or 10."""
    value = os.environ.get(ENV_RESTART_AFTER, "").strip()
    return int(value) if value.isdigit() else DEFAULT_RESTART_AFTER


def elapsed_before_restart() -> float:
    """Wall seconds this run spent before it last restarted itself (0 for a fresh run)."""
    try:
        return float(os.environ.get(ENV_ELAPSED, "0"))
    except ValueError:
        return 0.0


def restart_in_place(argv: Sequence[str], elapsed: float) -> None:
    """Replace this process by a fresh ``python -m study ARGV`` (same PID, stdout and terminal), which resumes the
    study from its storage. Only a new process image frees what TensorFlow's XLA cache holds. Does not return."""
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, ENV_ELAPSED: f"{elapsed:.3f}"}
    os.execve(sys.executable, [sys.executable, "-m", "study", *argv], env)


def sampler_seed(seed: int | None) -> int | None:
    """The seed of this process's sampler: workers, and a worker's fresh replacements, each get their own, so they
    never draw the same sequence; worker 1's first process gets ``seed`` itself, as a single process does."""
    number = worker_number()
    if seed is None or not number:
        return seed
    return seed + 7919 * (int(number) - 1) + 104729 * int(os.environ.get(ENV_GENERATION, "0"))


def limit_threads() -> None:
    """Configure TensorFlow's CPU thread pools in a ``--jobs`` worker. Call before any TF op runs.

    In a worker (``TOWER_STUDY_THREADS`` set by :class:`Workers`): that many intra-op and inter-op threads, and idle
    pool threads sleep instead of spinning (``ConfigProto.experimental.disable_thread_spinning``): a worker's
    spinning thread burns time on the core the other worker trains on. A single process keeps TensorFlow's
    defaults, where spinning measured faster (figures in docs/scaling.md).

    A process that already ran TensorFlow ops (in-process tests) keeps its pools as they are.
    """
    threads = os.environ.get(ENV_THREADS)
    if not threads:
        return
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    ctx = context.context()
    # No public setter exists for this option; tf.config.threading keeps its own fields beside ``_config``, and
    # Context.config merges them over it when the runtime starts (once started, both stay as they are). If a
    # TensorFlow release drops ``_config``, the worker only keeps spinning.
    if hasattr(ctx, "_config") and getattr(ctx, "_context_handle", None) is None:
        config = config_pb2.ConfigProto()
        if ctx._config is not None:
            config.CopyFrom(ctx._config)
        config.experimental.disable_thread_spinning = True
        ctx._config = config
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, int(threads)))
    except RuntimeError:  # TensorFlow already initialised its thread pools
        pass


def wait_for_parent(prefetch: Callable[[], Any] | None = None) -> bool:
    """In a worker started before its parent validated the run: warm up, then block until the parent says go.

    Warming up is importing what every trial needs (TensorFlow, TFRS, Optuna, the trainer) and calling ``prefetch``
    (e.g. loading the data into the in-process cache). Any error in ``prefetch`` is ignored: the parent validates
    the same input and reports it once, and the worker meets the error again after go if it is real. Returns True
    to go on (also when this process is not a waiting worker), False when the parent said stop or went away.
    """
    if not os.environ.get(ENV_WAIT):
        return True
    import optuna  # noqa: F401
    import tensorflow_recommenders  # noqa: F401

    import study.objective  # noqa: F401
    import study.train  # noqa: F401

    if prefetch is not None:
        try:
            prefetch()
        except Exception:  # reported by the parent
            pass
    return sys.stdin.readline().strip() == "go"


def threads_per_worker(jobs: int, cores: int | None = None) -> int:
    """``max(1, cores // jobs)``."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def worker_argv(argv: Sequence[str], recycle_after: int | None = None) -> list[str]:
    """The ``run`` arguments for one worker: the parent's, with ``--jobs`` dropped and ``--no-test`` added (and
    ``--recycle-after K`` when given: a worker runs with ``--jobs 1``, where the flag's default would be 0)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--jobs":
            skip = True
            continue
        if arg.startswith("--jobs="):
            continue
        out.append(arg)
    out.append("--no-test")
    if recycle_after is not None:
        out += ["--recycle-after", str(recycle_after)]
    return out


def _pump(proc: subprocess.Popen, label: str, stream: Any) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        stream.write(f"[worker {label}] {line}")
        stream.flush()


class Workers:
    """``jobs`` worker processes running ``python -m study`` + ``worker_argv(argv)``, started at once; each waits
    for :meth:`go` (see :func:`wait_for_parent`) and its output is copied to ``stream`` prefixed ``[worker i]``.

    With ``recycle_after`` K > 0, a worker leaves after K trials (exit code :data:`EXIT_RECYCLE`) and :meth:`wait`
    starts a fresh process under the same label: TensorFlow's XLA cache never evicts, so only a new process frees
    what the old one compiled. The fresh one does not wait for go (the study exists) and resumes it like any run.
    One worker (``jobs`` 1, for ``--recycle-after`` alone) keeps TensorFlow's default threads, as a single process.
    """

    def __init__(self, argv: Sequence[str], jobs: int, stream: Any = None, recycle_after: int = 0) -> None:
        self.stream = stream or sys.stdout
        self.jobs = jobs
        self.threads = threads_per_worker(jobs)
        self.recycle_after = recycle_after
        self.generations = [0] * jobs
        self.procs: list[subprocess.Popen] = []
        self.pumps: list[threading.Thread] = []
        self.args = worker_argv(argv, recycle_after)
        for i in range(1, jobs + 1):
            proc, pump = self._start(i, wait=True)
            self.procs.append(proc)
            self.pumps.append(pump)

    def _start(self, i: int, wait: bool, generation: int = 0) -> tuple[subprocess.Popen, threading.Thread]:
        """Worker ``i``'s process (waiting for go when ``wait``) and the thread copying its output."""
        env = {k: v for k, v in os.environ.items() if k not in (ENV_THREADS, ENV_WAIT)}
        env.update(
            {ENV_WORKER: str(i), ENV_GENERATION: str(generation), ENV_PARENT: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        )
        if self.jobs > 1:  # one worker (--recycle-after alone) keeps TensorFlow's default threads
            env[ENV_THREADS] = str(self.threads)
            # numpy's BLAS (the validation's score matmul) sizes its pool at import, from these
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(self.threads)
        if wait:
            env[ENV_WAIT] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "study", *self.args],
            env=env,
            stdin=subprocess.PIPE if wait else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the parent only; it forwards SIGINT to each worker
        )
        pump = threading.Thread(target=_pump, args=(proc, str(i), self.stream), daemon=True)
        pump.start()
        return proc, pump

    def _tell(self, word: str) -> None:
        for proc in self.procs:
            if proc.stdin is None:  # a fresh replacement: it never waits for go
                continue
            try:
                proc.stdin.write(word + "\n")
                proc.stdin.flush()
                proc.stdin.close()
            except OSError:  # the worker is gone already; wait() reports how it ended
                pass

    def go(self) -> None:
        """The study is ready: every worker starts its trials."""
        self._tell("go")
        threads = f"{self.threads} TensorFlow thread(s) each" if self.jobs > 1 else "TensorFlow's default threads"
        recycle = f", each replaced by a fresh process after {self.recycle_after} trials" if self.recycle_after else ""
        print(
            f"started {self.jobs} worker{'s' if self.jobs > 1 else ''} ({threads}{recycle}): pids "
            f"{[p.pid for p in self.procs]}",
            file=self.stream,
            flush=True,
        )

    def stop(self) -> None:
        """The run is not going ahead (bad input, Ctrl-C before go): the workers, which have touched nothing, end."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait()
        for pump in self.pumps:
            pump.join(timeout=5)

    def _replace(self, i: int) -> None:
        """Worker ``i + 1`` left after its ``recycle_after`` trials: a fresh process takes its place."""
        old = self.procs[i]
        self.pumps[i].join(timeout=5)  # its last lines first
        self.generations[i] += 1
        self.procs[i], self.pumps[i] = self._start(i + 1, wait=False, generation=self.generations[i])
        print(
            f"worker {i + 1} (pid {old.pid}) ran {self.recycle_after} trials; a fresh process (pid {self.procs[i].pid}) "
            "takes its place, freeing what TensorFlow kept of them",
            file=self.stream,
            flush=True,
        )

    def wait(self) -> int:
        """Wait for every worker after :meth:`go`.

        Returns:
            0 when every worker succeeded, EXIT_INTERRUPTED (130) when interrupted, else the first non-zero exit code.
        """
        procs, stream = self.procs, self.stream
        interrupted = False
        try:
            # Polled, not Popen.wait(): on Ctrl-C, wait() first gives the child 0.25 s to exit on its own (it assumes
            # the child got the terminal's SIGINT too); these workers are in their own session and only get the
            # forwarded one.
            while True:
                codes = [p.poll() for p in procs]  # every worker polled: a dead one is reaped at once
                for i, code in enumerate(codes):
                    if code == EXIT_RECYCLE:
                        self._replace(i)
                if None not in codes and EXIT_RECYCLE not in codes:
                    break
                time.sleep(0.1)
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            interrupted = True
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            codes = [p.wait() for p in procs]
        for pump in self.pumps:
            pump.join(timeout=5)
        if interrupted:
            return EXIT_INTERRUPTED
        for i, (proc, code) in enumerate(zip(procs, codes, strict=True), 1):
            if code < 0:  # killed by a signal (SIGKILL, the OOM killer): the others reap and retry its trial
                try:
                    how = f"was killed by {signal.Signals(-code).name}"
                except ValueError:
                    how = f"was killed by signal {-code}"
            elif code != 0:
                how = f"exited with code {code}"
            else:
                continue
            print(f"worker {i} (pid {proc.pid}) {how}", file=stream, flush=True)
        failed = [c for c in codes if c not in (0,)]
        return failed[0] if failed else 0
