"""`python -m aspo ...` = the `aspo` console script (used to start child processes)."""

from aspo.cli import app

app()
