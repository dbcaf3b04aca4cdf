"""Errors a user can hit: each message says what was wrong and what to do."""


class FedgateError(Exception):
    """Base class for errors shown to users without a traceback."""


class RequestError(FedgateError):
    """A request refused with an HTTP status: what was wrong, and what to do (nothing was created)."""

    def __init__(self, status_code: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param


class ConfigError(FedgateError):
    pass


class SubmissionError(FedgateError):
    """A job submission was refused; nothing was stored or enqueued."""

    def __init__(self, message: str, status_code: int = 422, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class JobNotFound(FedgateError):
    pass
