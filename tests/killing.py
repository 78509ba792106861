"""A `distill` command that SIGKILLs itself at a chosen step: right after the n-th return of
one function. The kill lands at the same step however busy the machine is, where a parent
that polls the run folder and then kills may wake too late, after the last quick step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

_SELF_KILLING = """
import importlib, os, signal, sys
module_name, name, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
real, returned = getattr(module, name), 0
def wrapper(*args, **kwargs):
    global returned
    result = real(*args, **kwargs)
    returned += 1
    if returned == calls:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(module, name, wrapper)
from distill.cli import main
main(sys.argv[4:])
"""


def killed_after(calls: int, target: str, *args: str, timeout: float = 300
                 ) -> subprocess.CompletedProcess:
    """`distill *args`, SIGKILLed right after the `calls`-th return of `target`
    ("module:function", looked up through the module at call time); fails unless the kill
    landed."""
    module, _, name = target.partition(":")
    # stderr to a file, not a pipe: a pipe would also wait for every child the command left
    # (fork server, workers) to close its inherited end
    with tempfile.TemporaryFile() as stderr:
        killed = subprocess.run([sys.executable, "-c", _SELF_KILLING, module, name, str(calls),
                                 *map(str, args)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                                stdout=subprocess.DEVNULL, stderr=stderr, check=False,
                                timeout=timeout)
        stderr.seek(0)
        printed = stderr.read().decode(errors="replace")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, printed[-2000:])
    return killed
