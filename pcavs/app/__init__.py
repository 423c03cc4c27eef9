"""Front-ends over `generate`, `Pipeline`, `evaluate` and `batch`: the `pcavs` command and the notebook helpers."""
