"""Error types: every error pcavs raises on purpose is a `PcavsError` with a one-line message
that names the file or argument and what to do. Callers catch the kinds separately."""


class PcavsError(Exception):
    """Base class for every error pcavs raises on purpose."""


class InputError(PcavsError):
    """A file or argument the user gave cannot be used (or the output cannot be written)."""


class WeightsError(PcavsError):
    """Checkpoint files are missing, truncated, unsafe, or belong to another model."""


class NetworkError(PcavsError):
    """Downloading weights failed: the connection, the server, or a quota; trying again may work."""


class OutOfMemoryError(PcavsError):
    """Even the smallest batch does not fit in the device's memory."""
