"""Serve request and response of the image task (plain pydantic: validated without Ray)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator


class ImageRequest(BaseModel):
    """``POST /v1/image``: generate the shapes of one class, named by prompt or label."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = Field(None, max_length=200, description='"a <colour> <shape>", e.g. "a red circle"')
    label: StrictInt | None = Field(None, ge=0, le=23, description="class index 0–23 (instead of a prompt)")
    system: StrictStr = Field("all", description="alone | clip | cls | cfg | all")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed (initial noise)")

    @model_validator(mode="after")
    def _one_of(self) -> ImageRequest:
        if (self.prompt is None) == (self.label is None):
            raise ValueError("give exactly one of prompt and label")
        return self


def image_response(row: dict[str, Any]) -> dict[str, Any]:
    """PNG images (base64), the independent evaluator's class of the first, its accuracy, energies."""
    from ensemble.media import png_base64
    from ensemble.tasks.image.data import CLASS_NAMES
    from ensemble.tasks.image.solver import decode_image

    pngs = []
    for blob in row["extras"]["images"]:
        image = ((decode_image(blob) + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        pngs.append(png_base64(image))
    predicted = row["answer"]
    return {"system": row["system"], "label": row["extras"]["label"], "images_png_b64": pngs,
            "evaluator_class": CLASS_NAMES[predicted] if predicted is not None else None,
            "evaluator_accuracy": row["metric"], "scorers": row["scorers"], "seconds": row["timings"]["seconds"],
            "config_hash": row["config_hash"]}
