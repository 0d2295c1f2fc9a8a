"""``with`` support for the objects that hold files, stores or connections until ``close()``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Base of an object that holds resources until :meth:`close`: ``with obj:`` closes
    it on the way out, error or not (the index's readers and its stores)."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
