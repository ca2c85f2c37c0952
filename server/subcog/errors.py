"""The exceptions subcog raises on purpose. The MCP edge turns each into a ToolError."""

import errno


class SubcogError(Exception):
    """Base class: the message is written for the person or model that made the call."""


class InvalidInput(SubcogError, ValueError):
    """An argument was rejected; nothing was changed."""


class NotFound(SubcogError, LookupError):
    """No memory has that id."""


class MissingIds(NotFound):
    """Some of the ids a change depends on match no memory; nothing was changed."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        super().__init__(
            f"No memory has the id {', '.join(ids)}; nothing was changed. Call recall to find ids."
        )


class InvalidSetting(SubcogError):
    """A SUBCOG_* environment variable has a value subcog cannot use."""


class NotReady(SubcogError):
    """The model or the store is still loading; the call may be retried."""


class ModelUnavailable(SubcogError):
    """No way of providing the embedding model worked."""


class ModelMismatch(SubcogError):
    """The store was built with another embedding model than the one loaded."""


class StoreBusy(SubcogError):
    """Another process held the store's write lock for too long."""


class NoSpace(SubcogError):
    """The disk holding the store is full; nothing was written."""


def full_disk(exc: BaseException | None) -> bool:
    """Whether a full disk caused this error: errno ENOSPC, or Lance's words for it."""
    for _ in range(10):  # the error, and what it was raised from
        if exc is None:
            return False
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class NotAllowed(SubcogError, PermissionError):
    """The caller's token may not do this in that scope; nothing was changed."""
