"""TextEmbedder: one L2-normalised sentence embedding per text (sentence-transformers layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# The model directory is inside the archive: never reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from handlers import envelopes  # noqa: E402
from handlers.base import BatchHandler, Item  # noqa: E402
from handlers.errors import InvalidText  # noqa: E402


class TextEmbedder(BatchHandler):
    """Embeds texts with a sentence-transformers model directory shipped in the archive.

    Input: any text form of handlers.envelopes: one text (raw UTF-8 body or {"text": "..."}) or
    a list ({"inputs": [...]} / {"instances": [...]}, up to limits.max_instances_per_request).
    Output: one list of floats per text (the model's dimension, 384 for MiniLM-L6).
    The pooling follows the model's own files: 1_Pooling/config.json (mean of the token
    embeddings, weighted by the attention mask so padding never counts) and a Normalize module
    in modules.json (L2). Texts longer than the model's max_seq_length tokens
    (sentence_bert_config.json) are truncated to it, as sentence-transformers does; an empty
    text or one over limits.max_text_chars characters gets 400 InvalidText.
    Weights are read from safetensors only (no pickle).
    """

    CODEC = envelopes.TEXT

    def load_model(self, model_dir: Path) -> None:
        folder = model_dir / self.config["model_dir"]
        self.max_chars = int(self.limits.get("max_text_chars", 20000))
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or any(
                pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                         "pooling_mode_mean_sqrt_len_tokens")):
            raise ValueError(f"{folder}: only mean pooling is implemented, got {pooling}")
        modules = json.loads((folder / "modules.json").read_text())
        self.normalize = any(m["type"].endswith(".Normalize") for m in modules)
        self.max_tokens = int(json.loads(
            (folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # padded per batch in predict
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.model = self.load_network(model_dir, lambda: self._eager(folder))
        self.dimension = int(self._embed([self._encode("warm-up")]).shape[1])

    def _eager(self, folder: Path):
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        network = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                            use_safetensors=True).eval().to(self.device)

        def forward(input_ids, attention_mask, token_type_ids):
            return network(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state

        return forward

    def _encode(self, text: str) -> dict[str, list[int]]:
        encoding = self.tokenizer.encode(text)
        return {"ids": encoding.ids, "types": encoding.type_ids}

    def preprocess_item(self, item: Item) -> None:
        text = item.data
        if not text.strip():
            raise InvalidText("the text is empty")
        if len(text) > self.max_chars:
            raise InvalidText(f"the text has {len(text)} characters; the limit is "
                              f"{self.max_chars}")
        item.input = self._encode(text)
        item.meta["tokens"] = len(item.input["ids"])  # max_tokens when truncated

    def _embed(self, encodings: list[dict[str, list[int]]]) -> torch.Tensor:
        length = max(len(e["ids"]) for e in encodings)
        shape = (len(encodings), length)
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        types = torch.zeros(shape, dtype=torch.long)
        mask = torch.zeros(shape, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            n = len(encoding["ids"])
            ids[row, :n] = torch.tensor(encoding["ids"])
            types[row, :n] = torch.tensor(encoding["types"])
            mask[row, :n] = 1
        ids, types, mask = ids.to(self.device), types.to(self.device), mask.to(self.device)
        hidden = self.model(ids, mask, types).float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def predict(self, items: list[Item]) -> list[torch.Tensor]:
        return list(self._embed([item.input for item in items]).cpu())

    def format_output(self, item: Item, params: dict[str, Any]) -> list[float]:
        return item.output.tolist()
