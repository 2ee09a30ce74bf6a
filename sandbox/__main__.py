"""`python -m sandbox` runs the sbx command line."""

from sandbox.cli import main

main()
