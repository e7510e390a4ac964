"""The one exception type for failures a user can cause (bad input, bad option, bad file)."""


class VmrError(Exception):
    """A user-facing error: its message is one line naming the file/row/item and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
