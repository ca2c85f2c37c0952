"""The exceptions subcog raises on purpose. The MCP edge turns each into a ToolError."""


class SubcogError(Exception):
    """Base class: the message is written for the person or model that made the call."""


class InvalidInput(SubcogError, ValueError):
    """An argument was rejected; nothing was changed."""


class NotFound(SubcogError, LookupError):
    """No memory has that id."""


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
