"""FaceDetector: face boxes, scores and five landmarks per image (MTCNN)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from handlers import envelopes, images
from handlers.base import BatchHandler, Item
from handlers.errors import InvalidParameter, echo

STAGES = ("pnet", "rnet", "onet")


class FaceDetector(BatchHandler):
    """Finds faces with MTCNN (facenet-pytorch's P-, R- and O-nets and its detection pipeline).

    Input: any image form of handlers.envelopes. Parameters (JSON field, form field, query on
    /<model>/predict, or X-Min-Score / X-Max-Faces header): `min_score` in [0, 1] and `max_faces`
    in 1..the catalog's max_faces; defaults from the catalog.
    Output per image: [{"box": [x1, y1, x2, y2], "score": float, "landmarks": [[x, y] x 5]}, ...],
    best score first, in the pixels of the original image after EXIF rotation (landmarks: left
    eye, right eye, nose, left and right mouth corner); [] when there is no face. Images are
    searched at most `max_side` pixels large (JPEG draft decoding, then a resize) and the results
    mapped back, so the cost per image is bounded. The state dicts are loaded with weights_only.
    """

    CODEC = envelopes.IMAGE
    PARAMETERS = ("min_score", "max_faces")

    def load_model(self, model_dir: Path) -> None:
        from facenet_pytorch.models import mtcnn

        cfg = self.config
        self.max_pixels = int(self.limits["max_image_pixels"])
        self.max_side = int(cfg["max_side"])
        self.min_face_size = int(cfg["min_face_size"])
        self.thresholds = [float(t) for t in cfg["thresholds"]]
        self.factor = float(cfg["factor"])
        self.default_min_score = float(cfg["min_score"])
        self.max_faces = int(cfg["max_faces"])
        folder = model_dir / cfg["weights_dir"]

        def eager():
            nets = []
            for name, cls in zip(STAGES, (mtcnn.PNet, mtcnn.RNet, mtcnn.ONet)):
                net = cls(pretrained=False)
                net.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu",
                                               weights_only=True))
                nets.append(net.eval().to(self.device))
            return self._pipeline(*nets)

        self.model = self.load_network(model_dir, eager)
        self.model(torch.zeros(1, 64, 64, 3, dtype=torch.uint8, device=self.device))

    def _pipeline(self, pnet, rnet, onet):
        from facenet_pytorch.models.utils.detect_face import detect_face

        def detect(batch: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
            """N x H x W x 3 uint8 (same size) -> per image (boxes N x 5, landmarks N x 5 x 2)."""
            boxes, points = detect_face(batch, self.min_face_size, pnet, rnet, onet,
                                        self.thresholds, self.factor, self.device)
            return list(zip(boxes, points))

        return detect

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        score = raw.get("min_score", self.default_min_score)
        min_score = envelopes.number(score)
        if min_score is None or not 0.0 <= min_score <= 1.0:
            raise InvalidParameter(f"min_score must be a number in [0, 1], got {echo(score)}")
        faces = raw.get("max_faces", self.max_faces)
        max_faces = envelopes.integer(faces)
        if max_faces is None or not 1 <= max_faces <= self.max_faces:
            raise InvalidParameter(
                f"max_faces must be an integer in 1..{self.max_faces}, got {echo(faces)}")
        return {"min_score": min_score, "max_faces": max_faces}

    def preprocess_item(self, item: Item) -> None:
        decoded = images.open_image(item.data, self.max_pixels, self.max_side)
        pixels = torch.from_numpy(np.array(decoded.rgb)).to(self.device)  # writable copy
        height, width = pixels.shape[:2]
        if max(height, width) > self.max_side:
            ratio = self.max_side / max(height, width)
            size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
            resized = F.interpolate(pixels.permute(2, 0, 1).unsqueeze(0).float(), size=size,
                                    mode="bilinear", antialias=True, align_corners=False)
            pixels = resized.squeeze(0).permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
        item.input = pixels
        item.meta["size"] = decoded.size
        item.meta["scale"] = (decoded.size[0] / pixels.shape[1], decoded.size[1] / pixels.shape[0])

    def predict(self, items: list[Item]) -> list[tuple[np.ndarray, np.ndarray]]:
        # MTCNN batches only images of one size: one call per size.
        outputs: list[Any] = [None] * len(items)
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            by_shape[tuple(item.input.shape)].append(index)
        empty = (np.zeros((0, 5)), np.zeros((0, 5, 2)))
        for shape, indices in by_shape.items():
            if min(shape[:2]) < max(12, self.min_face_size):
                results = [empty] * len(indices)  # smaller than any face the model can find
            else:
                results = self.model(torch.stack([items[i].input for i in indices]))
            for index, result in zip(indices, results):
                outputs[index] = result
        return outputs

    def format_output(self, item: Item, params: dict[str, Any]) -> list[dict]:
        boxes, points = item.output
        width, height = item.meta["size"]
        sx, sy = item.meta["scale"]
        order = np.argsort(-np.asarray(boxes[:, 4], dtype=np.float64)) if len(boxes) else []
        faces = []
        for i in order:
            score = float(boxes[i, 4])
            if score < params["min_score"] or len(faces) >= params["max_faces"]:
                continue
            x1, y1, x2, y2 = (float(v) for v in boxes[i, :4])
            faces.append({
                "box": [_clip(x1 * sx, width), _clip(y1 * sy, height),
                        _clip(x2 * sx, width), _clip(y2 * sy, height)],
                "score": round(score, 6),
                "landmarks": [[_clip(float(x) * sx, width), _clip(float(y) * sy, height)]
                              for x, y in points[i]],
            })
        return faces


def _clip(value: float, limit: int) -> float:
    return round(min(max(value, 0.0), float(limit)), 2)
