"""The one ``with`` shape every harness server and cluster shares."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartedInBlock:
    """``with`` starts the server(s) and always cleans up, also when ``start()`` fails
    half-way (a member that did start must not outlive the test)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
