"""Errors a user can fix: the CLI prints them on one line and exits with code 2."""


class UserError(Exception):
    """Bad input, a missing file, an unknown device: never a traceback, always exit code 2."""


class StageError(RuntimeError):
    """A stage of the running chain failed; the scheduler stops the chain and exits with code 1."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage '{stage}' failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause
