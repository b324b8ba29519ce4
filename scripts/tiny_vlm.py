"""Build ``tiny-vlm``, a tiny vision-language model with random weights, into the BentoML model store (once).

The test suite's vision model: a PaddleOCR-VL (a SigLIP vision tower that reads an image at its own resolution and
an ERNIE-4.5 text model, which vLLM's CPU backend serves with transformers' PIL image processor, no torchvision)
with two text layers and one vision layer, initialised from a fixed seed, with the default chat model's tokenizer
(SmolLM2's, from the store) plus PaddleOCR-VL's image tokens, and SmolLM2's ChatML template (vLLM puts the image
placeholder before the text). Its answers are noise, but the path is real: image parts reach the engine as images,
and an image's prompt tokens follow its size as a real model's do. The image is resized, its shape kept, to a grid
of ``CELL``-pixel cells (at least ``MIN_TOKENS``, at most ``MAX_TOKENS``), one token per cell (2 x 2 patches of 14
pixels, merged): a 64 x 64 image costs 4 image tokens, 128 x 128 25, 256 x 256 81, 512 x 512 256 (the most).

Why PaddleOCR-VL: without torchvision (PyPI's builds crash beside CPU torch; the install removes it), vLLM 0.32 cannot
load the other models whose tokens follow the pixels: Qwen2-VL's and Qwen2.5-VL's processors need a torchvision
video processor, and vLLM's llava, llava_next, mistral3 and pixtral modules import transformers' torchvision
Pixtral image processor. Idefics3 (SmolVLM's architecture, the previous tiny-vlm) scales every image to one long
side first, so its tokens followed the shape only.

Usage: ``python scripts/tiny_vlm.py`` (``make tiny-vlm``; ``make models`` runs it too). A model already in the
store is left alone, unless an older recipe built it.
"""

from __future__ import annotations

import time
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

NAME = "tiny-vlm"
BASE = "smollm2-135m-instruct"  # whose tokenizer and chat template it reuses (scripts/import_models.py)
SEED = 28
RECIPE = "3"  # bumped when the recipe changes: a store's older tiny-vlm is then built again
PATCH = 14  # the vision tower's patch side; 2 x 2 patches are merged into one token
CELL = 2 * PATCH  # pixels per image token, on each side
MIN_TOKENS, MAX_TOKENS = 1, 256  # an image's size is scaled into this many cells (a 448 x 448 image is 256)
IMAGE_TOKENS = ["<|IMAGE_START|>", "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_END|>"]  # vLLM's placeholder for the model


def say(message: str) -> None:
    print(f"[tiny-vlm] {message}", flush=True)


def build(target: Path) -> None:
    import torch
    from transformers import AutoTokenizer, PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration, PaddleOCRVLProcessor
    from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import PaddleOCRVLImageProcessorPil

    base = Path(bentoml.models.get(BASE).path)
    tokenizer = AutoTokenizer.from_pretrained(base, extra_special_tokens={"image_token": IMAGE_TOKENS[1]})
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    start, image, end = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS)
    # head_dim 64: vLLM's CPU attention kernels take 32, 64, 80, ... but not 16; M-RoPE's sections sum to its half
    rope = {"rope_type": "default", "rope_theta": 100000.0, "mrope_section": [8, 12, 12]}
    text = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 64, "vocab_size": (len(tokenizer) + 63) // 64 * 64,
            "rope_parameters": rope, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 2 * CELL, "patch_size": PATCH, "spatial_merge_size": 2}  # fmt: skip
    config = PaddleOCRVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=image,
        vision_start_token_id=start,
        vision_end_token_id=end,
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = PaddleOCRVLForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(target)
    pixels = {"shortest_edge": MIN_TOKENS * CELL * CELL, "longest_edge": MAX_TOKENS * CELL * CELL}  # areas
    images = PaddleOCRVLImageProcessorPil(size=pixels, patch_size=PATCH, merge_size=2)
    template = (base / "chat_template.jinja").read_text()
    PaddleOCRVLProcessor(images, tokenizer, chat_template=template).save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "chat_template.jinja").write_text(template)


def main() -> None:
    try:
        found = bentoml.models.get(NAME)
        if found.info.labels.get("recipe") == RECIPE:
            say(f"already in the store as {found.tag}")
            return
        say(f"{found.tag} was built by an older recipe: building it again")
        bentoml.models.delete(NAME)
    except NotFound:
        pass
    started = time.monotonic()
    description = f"a tiny random PaddleOCR-VL (seed {SEED}) with {BASE}'s tokenizer, for tests"
    with bentoml.models.create(
        NAME, labels={"source": "built", "recipe": RECIPE}, metadata={"description": description}
    ) as model:
        build(Path(model.path))
    say(f"saved as {model.tag} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
