"""What every client shares: the per-call model default and the close/context-manager
lifecycle around the one pooled connection (HTTP pool or gRPC channel) a client owns."""

from __future__ import annotations

from typing import Any


class Client:
    """Base of the four clients. Subclasses set self.model and implement close()."""

    model: str | None = None

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _model(self, model: str | None) -> str:
        name = model or self.model
        if not name:
            raise ValueError("no model name: pass model=... to the call or the client")
        return name
