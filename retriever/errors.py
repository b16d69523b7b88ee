"""The errors a user of an index can get; each message says what was wrong and where."""


class RetrieverError(Exception):
    """Base of the index's errors."""


class IndexNotFoundError(RetrieverError):
    pass


class IndexExistsError(RetrieverError):
    pass


class IndexMismatchError(RetrieverError):
    pass


class IndexLockedError(RetrieverError):
    pass
