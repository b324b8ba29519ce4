"""Build ``tiny-vlm``, a tiny vision-language model with random weights, into the BentoML model store (once).

The test suite's vision model: an Idefics3 (SmolVLM's architecture: a SigLIP vision tower and a Llama text model,
which vLLM's CPU backend serves with the PIL image processor, no torchvision) with two text layers and one vision
layer, initialised from a fixed seed, with the default chat model's tokenizer (SmolLM2's, from the store: SmolVLM's
own text model is SmolLM2) plus Idefics3's image tokens, and its ChatML template. Its answers are noise, but the
path is real: image parts reach the engine as images. Idefics3 scales an image to ``TILES * TILE`` pixels on its
long side and cuts it into ``TILE`` tiles (plus the whole image), so an image's prompt tokens follow its shape: a
square image costs the most (17 tiles), a long thin one the least. (Qwen2-VL, whose tokens follow the pixel count,
needs torchvision in vLLM 0.32, which the CPU install removes.)

Usage: ``python scripts/tiny_vlm.py`` (``make tiny-vlm``; ``make models`` runs it too). A model already in the
store is left alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

NAME = "tiny-vlm"
BASE = "smollm2-135m-instruct"  # whose tokenizer and chat template it reuses (scripts/import_models.py)
SEED = 28
RECIPE = "2"  # bumped when the recipe changes: a store's older tiny-vlm is then built again
TILE = 64  # the vision tower's input side: 4 x 4 patches of 16 pixels, 4 image tokens after the pixel shuffle
TILES = 4  # an image is scaled to TILES x TILE pixels on its long side and cut into tiles of TILE (plus the whole)
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)
]


def say(message: str) -> None:
    print(f"[tiny-vlm] {message}", flush=True)


def build(target: Path) -> None:
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        LlamaConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    base = Path(bentoml.models.get(BASE).path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    text = LlamaConfig.from_pretrained(base).to_dict()
    # head_dim 64: vLLM's CPU attention kernels take 32, 64, 80, ... but not 16
    text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=64, vocab_size=(len(tokenizer) + 63) // 64 * 64)  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": TILE, "patch_size": 16}  # fmt: skip
    config = Idefics3Config(
        vision_config=vision,
        text_config=text,
        pad_token_id=tokenizer.pad_token_id,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(target)
    images = Idefics3ImageProcessorPil(size={"longest_edge": TILES * TILE}, max_image_size={"longest_edge": TILE})
    template = (base / "chat_template.jinja").read_text()
    processor = Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=template)
    processor.save_pretrained(target)
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
    description = f"a tiny random Qwen2-VL (seed {SEED}) with {BASE}'s tokenizer, for tests"
    with bentoml.models.create(
        NAME, labels={"source": "built", "recipe": RECIPE}, metadata={"description": description}
    ) as model:
        build(Path(model.path))
    say(f"saved as {model.tag} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
