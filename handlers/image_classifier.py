"""ImageClassifier: top-k ImageNet classes for an image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from efficientnet_lite_pytorch import EfficientNet

from handlers import envelopes, images
from handlers.base import BatchHandler, Item
from handlers.errors import InvalidParameter, echo


def label_list(doc: Any) -> list[str]:
    """A label file as a list: either a list, or {"0": name, "1": name, ...}."""
    if isinstance(doc, dict):
        return [doc[str(i)] for i in range(len(doc))]
    return list(doc)


class ImageClassifier(BatchHandler):
    """Classifies images with an EfficientNet-Lite network and answers the top-k classes.

    Input: any image form of handlers.envelopes (JPEG, PNG, GIF, BMP, WebP, TIFF; any PIL mode).
    Parameter `topk` (JSON field, form field, query on /<model>/predict, or X-TopK header):
    1..max_topk, default from the catalog.
    Output per image: [{"class_index": int, "label": str, "probability": float}, ...], most
    probable first. Bad images get 400 (InvalidImage) or 413 (ImageTooLarge); a bad topk gets
    400 (InvalidParameter). The archive carries the state dict (loaded with weights_only=True)
    and the label file; the architecture comes from the efficientnet-lite-pytorch package.
    """

    CODEC = envelopes.IMAGE
    PARAMETERS = ("topk",)

    def load_model(self, model_dir: Path) -> None:
        cfg = self.config
        spec = cfg["input"]
        self.size = int(spec["size"])
        self.crop_fraction = float(spec["crop_fraction"])
        self.mean, self.std = float(spec["mean"]), float(spec["std"])
        self.max_pixels = int(self.limits["max_image_pixels"])
        self.default_topk, self.max_topk = int(cfg["topk"]), int(cfg["max_topk"])
        self.min_side = images.draft_side(self.size, self.crop_fraction)
        self.labels = label_list(json.loads((model_dir / cfg["labels"]).read_text()))
        example = torch.zeros(1, 3, self.size, self.size, device=self.device)
        self.model = self.load_network(model_dir, lambda: self._eager(model_dir), (example,))
        # One forward pass now, so the first request does not pay for allocator warm-up.
        self.model(example)

    def _eager(self, model_dir: Path) -> torch.nn.Module:
        model = EfficientNet.from_name(self.config["architecture"])
        state = torch.load(model_dir / self.config["weights"], map_location="cpu",
                           weights_only=True)
        model.load_state_dict(state)
        if len(self.labels) != model._fc.out_features:
            raise ValueError(f"{len(self.labels)} labels for {model._fc.out_features} classes")
        return model.eval().to(self.device)

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        value = raw.get("topk", self.default_topk)
        topk = envelopes.integer(value)
        if topk is None:
            raise InvalidParameter(f"topk must be an integer, got {echo(value)}")
        if not 1 <= topk <= self.max_topk:
            raise InvalidParameter(f"topk must be between 1 and {self.max_topk}, got {echo(topk)}")
        return {"topk": topk}

    def preprocess_item(self, item: Item) -> None:
        rgb = images.decode(item.data, self.max_pixels, self.min_side)
        item.input = images.to_model_input(rgb, self.size, self.crop_fraction, self.mean,
                                           self.std, self.device)

    def predict(self, items: list[Item]) -> list[torch.Tensor]:
        logits = self.model(torch.stack([item.input for item in items]))
        return list(torch.softmax(logits.float(), dim=1).cpu())

    def format_output(self, item: Item, params: dict[str, Any]) -> list[dict]:
        values, indices = torch.topk(item.output, params["topk"])
        return [
            {"class_index": int(i), "label": self.labels[int(i)], "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist())
        ]
