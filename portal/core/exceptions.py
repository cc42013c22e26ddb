"""Errors that services raise for a person to read."""


class ApplicationError(Exception):
    """A business rule refused an action. The message is translated and safe to show.

    `field` names the form field the message belongs to, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class PermissionDenied(ApplicationError):
    """The acting person may not do this (a member trying an owner's action, say)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message, field=field, code="permission_denied")
