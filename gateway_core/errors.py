"""Errors a user can hit: each message says what was wrong and what to do."""


class FedgateError(Exception):
    """Base class for errors shown to users without a traceback."""


class RequestError(FedgateError):
    """A request refused with an HTTP status: what was wrong, and what to do (nothing was created).

    The one error type for refused requests: the domain raises it (a submission, a batch, a spend cap) and the HTTP
    API answers it as it is, in OpenAI's error shape (`error.message`, `error.code`, `error.param`)."""

    def __init__(self, status_code: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param


class ConfigError(FedgateError):
    pass
