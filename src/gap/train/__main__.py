"""``python -m gap.train`` (and ``accelerate launch -m gap.train``): the same options as ``gap train``."""

from gap.cli.train import app

app(prog_name="python -m gap.train")
