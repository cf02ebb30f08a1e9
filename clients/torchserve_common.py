"""What the TorchServe REST and gRPC clients share: health by the bundle's readiness rule, the
typed helpers of each model kind (classify, embed, detect faces) built on one `predict`, and
the decoding of answers. Protocol code implements only _send() and describe_model().
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients import endpoints, errors
from clients.base import Client
from clients.images import Face, ImageInput, Prediction, image_bytes

# The bundle's model of each kind: the default of the typed helpers.
CLASSIFIER = "efficientnet_lite0"
EMBEDDER = "minilm_embeddings"
FACE_DETECTOR = "face_detector"

Body = bytes | dict | list


@dataclass(frozen=True)
class ModelHealth:
    """Readiness of one model by the bundle's rule (clients.endpoints.is_ready): at least one
    worker and all workers READY. `workers` counts workers by TorchServe state."""

    model: str
    ready: bool
    version: str | None = None
    workers: dict[str, int] = field(default_factory=dict)
    reason: str = ""


def model_health(name: str, version: str | None, entries: list[dict[str, Any]]) -> ModelHealth:
    """ModelHealth from TorchServe's describe-model answer (same JSON over REST and gRPC)."""
    counts: dict[str, int] = {}
    for state in endpoints.worker_states(entries, version):
        counts[state] = counts.get(state, 0) + 1
    entry = next((e for e in entries if version is None or e.get("modelVersion") == version),
                 entries[0] if entries else {})
    reason = endpoints.not_ready_reason(entries, version)
    return ModelHealth(name, not reason, entry.get("modelVersion"), counts, reason)


def as_body(data: Any) -> Body:
    """What predict() sends: bytes as they are, a dict or list as JSON."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (dict, list)):
        return data
    raise TypeError(f"predict() sends bytes or a JSON dict/list, not {type(data).__name__}; "
                    "for images see classify_image()/detect_faces(), for texts embed()")


def with_params(doc: Any, params: Mapping[str, Any]) -> Any:
    """A JSON body carries its parameters as top-level fields."""
    if params and not isinstance(doc, dict):
        raise ValueError("parameters need a JSON object body (or raw bytes)")
    return {**doc, **params} if params else doc


def check_answer(doc: Any, target: str | None) -> Any:
    """The answer, or the handler's error it carries (gRPC answers handler errors with OK)."""
    error = errors.from_payload(doc, target)
    if error is not None:
        raise error
    return doc


class TorchServeBase(Client):
    """The typed helpers over predict(); subclasses implement _send() and describe_model()."""

    def _send(self, model: str, version: str | None, body: Body,
              params: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def describe_model(self, model: str | None = None, version: str | None = None
                       ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def predict(self, data: bytes | dict | list, model: str | None = None, *,
                version: str | None = None, params: Mapping[str, Any] | None = None) -> Any:
        """Any model: send `data` (bytes as the raw body, or a dict/list as JSON) and return the
        model's JSON answer unchanged. `params` (e.g. {"topk": 3}) travel as top-level JSON
        fields, or beside raw bytes as X-<name> headers (REST) or named inputs (gRPC)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return self._send(self._model(model), version, as_body(data), clean)

    # -- image classifier ---------------------------------------------------------------------
    def classify_image(self, image: ImageInput, model: str | None = None, *,
                       version: str | None = None, topk: int | None = None) -> list[Prediction]:
        """Top-k classes of one image (model default: the bundle's classifier)."""
        answer = self.predict(image_bytes(image), model or CLASSIFIER, version=version,
                              params={"topk": topk})
        return [Prediction.from_json(p) for p in answer]

    def classify_images(self, images: Iterable[ImageInput], model: str | None = None, *,
                        version: str | None = None, topk: int | None = None
                        ) -> list[list[Prediction]]:
        """Top-k classes of several images in one request ({"instances": [...]}). TorchServe
        answers such a request as a whole: one bad image fails it with an error naming the
        instance (instances[i]: ...)."""
        body = {"instances": [{"b64": base64.b64encode(image_bytes(i)).decode()}
                              for i in images]}
        doc = self.predict(body, model or CLASSIFIER, version=version, params={"topk": topk})
        return [[Prediction.from_json(p) for p in row] for row in _predictions(doc)]

    # -- sentence embeddings -----------------------------------------------------------------
    def embed(self, texts: str | Iterable[str], model: str | None = None, *,
              version: str | None = None) -> np.ndarray:
        """Sentence embeddings: float32 array (N, dim), one L2-normalised row per text (a single
        string gives N = 1). Model default: minilm_embeddings (dim 384)."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            return np.zeros((0, 0), dtype=np.float32)
        doc = self.predict({"inputs": batch}, model or EMBEDDER, version=version)
        vectors = np.asarray(_predictions(doc), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise errors.ServingError(f"expected {len(batch)} vectors, got shape {vectors.shape}")
        return vectors

    # -- face detector -----------------------------------------------------------------------
    def detect_faces(self, image: ImageInput, model: str | None = None, *,
                     version: str | None = None, min_score: float | None = None,
                     max_faces: int | None = None) -> list[Face]:
        """Faces in one image, in its own pixels; an empty list when there is none."""
        answer = self.predict(image_bytes(image), model or FACE_DETECTOR, version=version,
                              params={"min_score": min_score, "max_faces": max_faces})
        if not isinstance(answer, list):
            raise errors.ServingError(f"expected a list of faces, got {json.dumps(answer)[:80]}")
        return [Face.from_json(f) for f in answer]

    # -- readiness ---------------------------------------------------------------------------
    def health(self, model: str | None = None, version: str | None = None) -> ModelHealth:
        """Whether `model` can serve now (clients.endpoints.is_ready). /ping alone is not
        trusted: it answers Healthy while every worker of a model is dead. A model TorchServe
        does not know is reported not ready; other errors (auth, connection) are raised."""
        name = self._model(model)
        try:
            entries = self.describe_model(name, version)
        except errors.NotFound as exc:
            return ModelHealth(name, False, version, reason=exc.message)
        return model_health(name, version, entries)


def _predictions(doc: Any) -> list:
    if not isinstance(doc, dict) or not isinstance(doc.get("predictions"), list):
        raise errors.ServingError(f"expected {{\"predictions\": [...]}}, got "
                                  f"{json.dumps(doc)[:80]}")
    return doc["predictions"]
