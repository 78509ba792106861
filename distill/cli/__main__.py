"""`python -m distill.cli …`, as torchrun and `accelerate launch -m` start it."""

from distill.cli import main

if __name__ == "__main__":  # worker processes import this module again; they must not run it
    main()
