"""`python -m distill.cli …`, as torchrun and `accelerate launch -m` start it."""

from distill.cli import main

main()
