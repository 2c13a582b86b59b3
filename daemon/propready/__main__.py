"""`python -m propready` is the same as the `propready` command."""

from propready.cli.main import main

main()
