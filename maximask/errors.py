"""The one exception type for user-facing failures."""


class MaximaskError(Exception):
    """A failure caused by the user's input or configuration.

    Parameters
    ----------
    path : str
        The file (or directory, or option) the failure concerns.
    reason : str
        What is wrong, in one line.

    The CLI prints it as ``maximask: error: <path>: <reason>``.
    """

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = str(reason)


class UsageError(MaximaskError):
    """A usage or configuration error: nothing is processed, exit code 2."""
