"""A `distill` command that SIGKILLs itself at a chosen step: right after the n-th return of
one function. The kill lands at the same step however busy the machine is, where a parent
that polls the run folder and then kills may wake too late, after the last quick step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

_SELF_KILLING = """
import importlib, os, signal, sys
module_name, name, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
real, returned = getattr(module, name), []
def wrapper(*args, **kwargs):
    result = real(*args, **kwargs)
    returned.append(1)
    if len(returned) == calls:
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
    killed = subprocess.run([sys.executable, "-c", _SELF_KILLING, module, name, str(calls),
                             *map(str, args)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, check=False, timeout=timeout)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    return killed
