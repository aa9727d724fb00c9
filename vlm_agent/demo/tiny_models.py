"""Tiny, randomly initialised vision-language models of real architectures, built offline.

:func:`make_tiny_model` writes a directory that ``AutoModelForImageTextToText.from_pretrained`` and
``AutoProcessor.from_pretrained`` load without any network access: a model of the real
architecture (Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT with a Mistral text backbone, Idefics3 with a
Llama backbone, or Gemma 3) at toy size (hidden 128, 4 layers, vision width 64 x 2 layers,
112 px images: about 1.2-1.4M parameters), a byte-level BPE tokenizer trained on the spot on a
synthetic corpus of this project's prompts and JSON answers (digits split one per token), a chat
template that places the image, and the architecture's image processor.

**The weights are random.** Such a model emits near-uniform junk, not JSON; it exists so that tests
and CPU demonstrations run the real code paths (processor, generation, LoRA, PPO) end to end. A
demonstration that should learn needs a supervised warm start first (``vlm_agent.training.sft``); one that
should learn from the image alone needs eyes first: :data:`LEGIBLE_VISION` (``vision=``) and the
read-out alignment of ``vlm_agent.demo.alignment``.

The same ``seed`` gives byte-identical weights and tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Idefics3Config,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaNextConfig,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
)

from vlm_agent.demo.tiny_tokenizer import (
    _GEMMA3_CHAT_TEMPLATE,
    _IDEFICS3_CHAT_TEMPLATE,
    _LLAVA_CHAT_TEMPLATE,
    _QWEN_CHAT_TEMPLATE,
    env_vocabulary_corpus,
    tokenizer_corpus,
    train_tokenizer,
)
from vlm_agent.models.loading import (
    Qwen2_5_VLImageProcessorOnly,
    Qwen2VLImageProcessorOnly,
)

TINY_ARCHITECTURES = ("qwen2_vl", "qwen2_5_vl", "llava_next", "idefics3", "gemma3")

#: Patch size of every tiny vision tower, and the default side of the images the processors produce.
PATCH_SIZE = 14
IMAGE_SIZE = 112


@dataclass(frozen=True)
class VisionSettings:
    """Size of a tiny model's eyes: the processed image side (pixels), the vision width and depth.

    The default (112 px, width 64, 2 layers) is the cheapest that runs every code path; it is what
    tests use. At 112 px a Blackjack card's rank shrinks to ~6 px, below what a 14 px patch can
    tell apart; :data:`LEGIBLE_VISION` is the setting the alignment stage (``vlm_agent.demo.alignment``)
    uses to make the card games legible.
    """

    image_size: int = IMAGE_SIZE
    width: int = 64
    depth: int = 2

    def __post_init__(self) -> None:
        # Qwen merges 2 x 2 patches, Idefics3 pixel-shuffles by 2, Gemma 3 pools to 4 x 4: a side
        # of an even number of 14 px patches suits all of them (Gemma 3 also needs a multiple of 4).
        if self.image_size < 56 or self.image_size % (2 * PATCH_SIZE):
            raise ValueError(f"image_size must be a multiple of {2 * PATCH_SIZE} and >= 56, got {self.image_size}")
        if self.width < 16 or self.width % 16:
            raise ValueError(f"vision width must be a positive multiple of 16, got {self.width}")
        if self.depth < 1:
            raise ValueError(f"vision depth must be >= 1, got {self.depth}")

    @property
    def patches_per_side(self) -> int:
        return self.image_size // PATCH_SIZE


#: Legible card games: 168 px keeps a Blackjack card's rank ~10 px high and NumberLine's digits
#: ~22 px (300 px frames), 12 x 12 patches -> 36 image tokens after Qwen's 2 x 2 merge. Legible is
#: not yet read: 800 alignment steps left this tiny model's NumberLine read-out at chance
#: (benchmarks/results/tiny_vlm_readout.md).
LEGIBLE_VISION = VisionSettings(image_size=168, width=64, depth=2)


def _qwen_image_processor(vision: VisionSettings) -> Qwen2VLImageProcessorPil:
    # longest_edge is a pixel count; a little slack above side*side keeps side x side (112 px: 16 tokens).
    side = vision.image_size
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": 56 * 56, "longest_edge": side * side + 2000},
        patch_size=PATCH_SIZE,
        merge_size=2,
        temporal_patch_size=2,
    )


def _qwen_text_config(vocab_size: int, tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int) -> dict:
    heads = 4
    half = hidden // heads // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # mrope sections (temporal, height, width) must sum to head_dim / 2.
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [temporal, height, half - temporal - height],
        },
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": True,
    }


def _qwen_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _build_qwen2_vl(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, vision: VisionSettings
) -> tuple[object, ProcessorMixin]:
    config = Qwen2VLConfig(
        text_config=_qwen_text_config(len(tokenizer), tokenizer, hidden, layers),
        vision_config={
            "depth": vision.depth,
            "embed_dim": vision.width,
            "hidden_size": hidden,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        tie_word_embeddings=True,
        **_qwen_token_ids(tokenizer),
    )
    processor = Qwen2VLImageProcessorOnly(
        image_processor=_qwen_image_processor(vision), tokenizer=tokenizer, chat_template=_QWEN_CHAT_TEMPLATE
    )
    return config, processor


def _build_qwen2_5_vl(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, vision: VisionSettings
) -> tuple[object, ProcessorMixin]:
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(len(tokenizer), tokenizer, hidden, layers),
        vision_config={
            "depth": vision.depth,
            "hidden_size": vision.width,
            "intermediate_size": 2 * vision.width,
            "num_heads": 4,
            "out_hidden_size": hidden,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": vision.image_size,
            "fullatt_block_indexes": [vision.depth - 1],
        },
        tie_word_embeddings=True,
        **_qwen_token_ids(tokenizer),
    )
    processor = Qwen2_5_VLImageProcessorOnly(
        image_processor=_qwen_image_processor(vision), tokenizer=tokenizer, chat_template=_QWEN_CHAT_TEMPLATE
    )
    return config, processor


def _build_llava_next(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, vision: VisionSettings
) -> tuple[object, ProcessorMixin]:
    side = vision.image_size
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side]]
    text_config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=vision.width,
        intermediate_size=2 * vision.width,
        # Features come from layer -2, so the tower needs at least two layers.
        num_hidden_layers=max(2, vision.depth),
        num_attention_heads=4,
        image_size=side,
        patch_size=PATCH_SIZE,
        projection_dim=vision.width,
    )
    config = LlavaNextConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=True,
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=_LLAVA_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    return config, processor


def _small_vision(vision: VisionSettings) -> dict:
    """A small ViT in 14 px patches (112 px: 8 x 8 = 64 patch features)."""
    return {
        "hidden_size": vision.width,
        "intermediate_size": 2 * vision.width,
        "num_hidden_layers": vision.depth,
        "num_attention_heads": 4,
        "image_size": vision.image_size,
        "patch_size": PATCH_SIZE,
    }


def _build_idefics3(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, vision: VisionSettings
) -> tuple[object, ProcessorMixin]:
    scale_factor = 2  # pixel shuffle: 112 px, 64 patch features -> 16 image tokens
    image_seq_len = vision.patches_per_side**2 // scale_factor**2
    config = Idefics3Config(
        vision_config=_small_vision(vision),
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": True,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": vision.image_size},
        max_image_size={"longest_edge": vision.image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=_IDEFICS3_CHAT_TEMPLATE,
    )
    return config, processor


def _build_gemma3(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, vision: VisionSettings
) -> tuple[object, ProcessorMixin]:
    tokens_per_image = 16  # average pooling of the patch features to 4 x 4
    if vision.patches_per_side % 4:
        raise ValueError(f"gemma3 pools patches to 4 x 4: image_size must be a multiple of 56, got {vision.image_size}")
    head_dim = hidden // 4
    config = Gemma3Config(
        vision_config={"model_type": "siglip_vision_model", **_small_vision(vision)},
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim,
            "max_position_embeddings": 4096,
            "sliding_window": 512,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        tie_word_embeddings=True,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": vision.image_size, "width": vision.image_size})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_GEMMA3_CHAT_TEMPLATE,
        image_seq_length=tokens_per_image,
    )
    return config, processor


_BUILDERS = {
    "qwen2_vl": _build_qwen2_vl,
    "qwen2_5_vl": _build_qwen2_5_vl,
    "llava_next": _build_llava_next,
    "idefics3": _build_idefics3,
    "gemma3": _build_gemma3,
}


def make_tiny_model(
    arch: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 128,
    num_layers: int = 4,
    vocab_size: int = 1024,
    vision: VisionSettings | None = None,
    extra_corpus: Sequence[str] = (),
) -> Path:
    """Build and save a tiny randomly initialised VLM of architecture ``arch``; return ``out_dir``.

    Args:
        arch: one of :data:`TINY_ARCHITECTURES` ("qwen2_vl", "qwen2_5_vl", "llava_next", "idefics3", "gemma3").
        out_dir: directory to write (created; existing model files are overwritten).
        seed: seeds tokenizer corpus and weights; equal seeds give identical files.
        hidden_size: LM width (multiple of 32; 128 gives ~1.3M parameters).
        num_layers: LM depth.
        vocab_size: upper bound of the BPE vocabulary (the corpus may give fewer tokens).
        vision: image side, vision width and depth (default :class:`VisionSettings`: 112 px, 64 x 2);
            :data:`LEGIBLE_VISION` before an alignment stage that should teach the model to read.

        extra_corpus: texts added to the tokenizer's corpus (e.g.
            :func:`~vlm_agent.demo.tiny_tokenizer.env_vocabulary_corpus`: ALFWorld's names as whole
            tokens); none (the default) gives the tokenizer of before.

    The weights are random: see the module docstring.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHITECTURES)}")
    if hidden_size % 32 or hidden_size < 32:
        raise ValueError(f"hidden_size must be a positive multiple of 32, got {hidden_size}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = [*tokenizer_corpus(seed), *extra_corpus] if extra_corpus else None
    tokenizer = train_tokenizer(arch, seed=seed, vocab_size=vocab_size, corpus=corpus)
    config, processor = _BUILDERS[arch](tokenizer, hidden_size, num_layers, vision or VisionSettings())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


#: Vocabulary bound of a tiny model whose tokenizer also learns an environment's words.
ENV_VOCABULARY_SIZE = 2048


def make_tiny_model_for_env(arch: str, out_dir: str | Path, env_id: str, *, seed: int = 0) -> Path:
    """:func:`make_tiny_model` whose tokenizer also knows ``env_id``'s own words
    (:func:`~vlm_agent.demo.tiny_tokenizer.env_vocabulary_corpus`; ALFWorld: every object and
    receptacle name one token, with a vocabulary of up to :data:`ENV_VOCABULARY_SIZE`). For the
    card games it is :func:`make_tiny_model` itself (same files)."""
    corpus = env_vocabulary_corpus(env_id)
    if not corpus:
        return make_tiny_model(arch, out_dir, seed=seed)
    return make_tiny_model(arch, out_dir, seed=seed, extra_corpus=corpus, vocab_size=ENV_VOCABULARY_SIZE)
