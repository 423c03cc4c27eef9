"""Error types: what went wrong is the user's input, or ours."""


class PcavsError(Exception):
    """Base class for every error pcavs raises on purpose."""


class InputError(PcavsError):
    """A file or argument the user gave cannot be used; the message says which and what to do."""


class WeightsError(InputError):
    """Checkpoint files are missing, truncated, unsafe, or belong to another model."""
