"""`python -m conveyor.cli`: the same as the `conveyor` console script (used by the benchmark's server process)."""

from conveyor.cli import main

main()
