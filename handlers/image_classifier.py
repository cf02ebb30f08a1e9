"""ImageClassifier: top-k ImageNet classes for an image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from efficientnet_lite_pytorch import EfficientNet

from handlers import images
from handlers.base import BatchHandler
from handlers.errors import InvalidParameter
from handlers.payloads import text_param


class ImageClassifier(BatchHandler):
    """Classifies images with an EfficientNet-Lite network and answers the top-k classes.

    Input: any form handlers.payloads accepts; each input is an encoded image (JPEG, PNG, GIF,
    BMP, WebP, TIFF; any PIL mode). Parameter `topk` (JSON field, form field, query on
    /<model>/predict, or X-TopK header): 1..max_topk, default from the catalog.
    Output per image: [{"class_index": int, "label": str, "probability": float}, ...], most
    probable first. Bad images get 400 (InvalidImage) or 413 (ImageTooLarge); a bad topk gets
    400 (InvalidParameter). The archive carries the state dict (loaded with weights_only=True)
    and labels.json; the architecture comes from the efficientnet-lite-pytorch package.
    """

    PARAMETERS = ("topk",)

    def load_model(self, model_dir: Path) -> None:
        cfg = self.config
        self.size = int(cfg["input_size"])
        self.crop_fraction = float(cfg["crop_fraction"])
        self.mean, self.std = float(cfg["input_mean"]), float(cfg["input_std"])
        self.max_pixels = int(cfg["max_image_pixels"])
        self.default_topk, self.max_topk = int(cfg["topk"]), int(cfg["max_topk"])
        self.min_side = images.draft_side(self.size, self.crop_fraction)
        self.labels = json.loads((model_dir / cfg["labels_file"]).read_text())

        model = EfficientNet.from_name(cfg["architecture"])
        state = torch.load(self.weights_path(model_dir), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(self.device)
        if len(self.labels) != model._fc.out_features:
            raise ValueError(f"{len(self.labels)} labels for {model._fc.out_features} classes")
        # One forward pass now, so the first request does not pay for allocator warm-up.
        self.model(torch.zeros(1, 3, self.size, self.size, device=self.device))

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        value = text_param(raw.get("topk", self.default_topk))
        try:
            topk = int(value)
            if isinstance(value, float) and value != topk or isinstance(value, bool):
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidParameter(f"topk must be an integer, got {value!r}") from None
        if not 1 <= topk <= self.max_topk:
            raise InvalidParameter(f"topk must be between 1 and {self.max_topk}, got {topk}")
        return {"topk": topk}

    def preprocess_item(self, data: bytes) -> torch.Tensor:
        rgb = images.decode(data, self.max_pixels, self.min_side)
        return images.to_model_input(rgb, self.size, self.crop_fraction, self.mean, self.std,
                                     self.device)

    def predict(self, items: list[torch.Tensor]) -> list[torch.Tensor]:
        logits = self.model(torch.stack(items))
        return list(torch.softmax(logits.float(), dim=1).cpu())

    def format_output(self, probabilities: torch.Tensor, params: dict[str, Any]) -> list[dict]:
        values, indices = torch.topk(probabilities, params["topk"])
        return [
            {"class_index": int(i), "label": self.labels[int(i)], "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist())
        ]
