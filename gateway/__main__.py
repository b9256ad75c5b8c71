"""`python -m punchgate.gateway` runs the punchgate command."""

from punchgate.gateway.cli import main

main()
