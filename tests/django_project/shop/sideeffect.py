"""A module no job may make a process import: importing it leaves a file beside the test database."""

import os
from pathlib import Path

Path(os.environ["DJANGO_TEST_SQLITE"] + ".sideeffect-imported").touch()


def run(*args: object) -> None:
    Path(os.environ["DJANGO_TEST_SQLITE"] + ".sideeffect-ran").touch()
