"""The tutorial-style peer for bench/load.py: FastAPI + Keras `model.predict`, one image per
request, decoded in full with Pillow. Same model (EfficientNet-Lite0 with the same ImageNet
weights as models/imagenet) and same resize as the bundle, written the way most tutorials do:
an `async def` route that reads the upload and calls `predict` on the event loop.

Run by bench/load.py (needs the train extra: TensorFlow is fine here, never in app/):
  .venv/bin/python -m uvicorn bench.keras_peer:app --port 8123
"""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from training.architectures.efficientnet_lite import efficientnet_lite0

model = efficientnet_lite0(weights="imagenet")
labels = (
    (Path(__file__).resolve().parent.parent / "models/imagenet/labels.txt").read_text().split("\n")
)
app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008
    contents = await file.read()
    img = Image.open(io.BytesIO(contents)).convert("RGB")
    # centre crop to a square, then 224x224 bilinear (the bundle's resize policy)
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    img = img.resize((224, 224), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32)[None]
    probs = model.predict(x, verbose=0)[0]
    top = np.argsort(-probs)[:5]
    return {"predictions": [{"label": labels[i], "score": float(probs[i])} for i in top]}
