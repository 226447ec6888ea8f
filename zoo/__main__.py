"""`python -m zoo ...` is the `zoo` command (handy for `accelerate launch -m zoo` / `torchrun -m zoo`)."""

from .console import main

main()
