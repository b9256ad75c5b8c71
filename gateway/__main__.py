"""`python -m gateway` runs the punchgate command."""

from gateway.cli import main

main()
