"""``python -m tensortap``: the command line."""

from tensortap.cli import main

main()
