"""Run external commands with a bound on every wait.

The one place dbha starts a short-lived process and waits for it. Every call
has a timeout; subprocess and OS errors are mapped to dbha's own exceptions.
Secrets go on standard input or in files, never in ``argv`` (visible in ps).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from dbha.errors import CommandFailed, CommandTimeout


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and wait at most ``timeout`` seconds.

    Returns the completed process (text mode, output captured). Raises
    CommandTimeout if it does not finish in time (the process is killed),
    CommandFailed if it cannot be started or, with ``check``, exits non-zero.
    """
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeout(f"{argv[0]}: no answer within {timeout:g} s") from exc
    except OSError as exc:
        raise CommandFailed(f"{argv[0]}: cannot start: {exc.strerror or exc}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        tail = detail[-1] if detail else "no output"
        raise CommandFailed(f"{' '.join(argv[:4])}: exit {proc.returncode}: {tail}")
    return proc


def run_limited(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    max_output: int = 4096,
) -> tuple[int, str]:
    """Run ``argv`` in a session of its own, wait at most ``timeout`` seconds, and
    return its exit status and its output (stdout and stderr together, the last
    ``max_output`` bytes, decoded leniently). The output goes to a temporary file,
    so a program that writes a lot costs no memory.

    Raises CommandTimeout when it does not finish in time (its whole process group
    is killed first: a shell's children too), CommandFailed when it cannot start.
    """
    import contextlib
    import os
    import signal
    import tempfile

    with tempfile.TemporaryFile() as out:
        try:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandFailed(f"{argv[0]}: cannot start: {exc.strerror or exc}") from exc
        code: int | None
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5.0)
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - max_output))
        text = out.read(max_output).decode(errors="replace")
    if code is None:
        err = CommandTimeout(f"{argv[0]}: no answer within {timeout:g} s")
        err.output = text
        raise err
    return code, text
