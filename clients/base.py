"""What every client shares: per-call model defaults and the close/context-manager lifecycle
around the one pooled connection (HTTP pool or gRPC channel) a client owns."""

from __future__ import annotations

import threading
from typing import Any

from clients import errors


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
            raise errors.ConfigurationError("no model name: pass model=... to the call or client")
        return name


class TFServingClientBase(Client):
    """What the TF Serving REST and gRPC clients share: version/label defaults, availability,
    and signatures fetched once per model/version/label (subclasses implement status() and
    _fetch_signatures())."""

    DEFAULT_SIGNATURE = "serving_default"

    def __init__(self, model: str | None, version: int | None, label: str | None) -> None:
        self.model, self.version, self.label = model, version, label
        self._signatures: dict[tuple, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _selection(self, version: int | None, label: str | None
                   ) -> tuple[int | None, str | None]:
        """The call's version/label, else the client's defaults."""
        if version is not None and label is not None:
            raise ValueError("pass a version or a label, not both")
        if version is None and label is None:
            return self.version, self.label
        return version, label

    def status(self, model: str | None = None, version: int | None = None,
               label: str | None = None) -> list:
        raise NotImplementedError

    def _fetch_signatures(self, model: str | None, version: int | None,
                          label: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def is_available(self, model: str | None = None, version: int | None = None) -> bool:
        """Is version N (or any version) AVAILABLE? False, not an error, for unknown models
        or versions, so it can back a readiness probe."""
        from clients.tfserving_common import is_available

        try:
            return is_available(self.status(model, version), version)
        except errors.NotFound:
            return False

    def signatures(self, model: str | None = None, version: int | None = None,
                   label: str | None = None) -> dict[str, Any]:
        """Signatures by name (cached per model/version/label)."""
        key = (model or self.model, version, label, self.version, self.label)
        with self._lock:
            if key in self._signatures:
                return self._signatures[key]
        sigs = {name: sig for name, sig in self._fetch_signatures(model, version, label).items()
                if not name.startswith("__")}
        with self._lock:
            self._signatures[key] = sigs
        return sigs

    def signature(self, name: str = DEFAULT_SIGNATURE, model: str | None = None,
                  version: int | None = None, label: str | None = None) -> Any:
        sigs = self.signatures(model, version, label)
        if name not in sigs:
            raise errors.ConfigurationError(f"model has no signature {name!r}; it has "
                                            f"{sorted(sigs)}")
        return sigs[name]
