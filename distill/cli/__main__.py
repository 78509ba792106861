"""`python -m distill.cli …`, as torchrun and `accelerate launch -m` start it."""

import os
import sys

from distill.cli import main


def leave(code: int) -> None:
    """Exit; inside a multi-process launch, without finalizing the interpreter.

    Gloo's worker threads drop the tensors of the last collective after the caller has its
    result, and dropping a tensor takes the GIL: when the interpreter is already finalizing,
    that thread dies inside a noexcept destructor and the rank aborts ("terminate called
    without an active exception", SIGABRT; 1 in ~20 two-process runs here). destroying the
    process group does not help while the DDP wrapper still holds it. Every output is written
    and closed by the time a command returns, so a rank skips finalization altogether.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # worker processes import this module again; they must not run it
    try:
        main()
    except SystemExit as done:
        code = done.code
        if code is not None and not isinstance(code, int):  # sys.exit("message")
            print(code, file=sys.stderr)
            code = 1
        leave(code or 0)
