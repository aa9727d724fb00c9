"""Load any Hugging Face image-text-to-text model (+ processor) for acting and PPO training.

Supported and tested (with tiny random models of the real architectures): Qwen2-VL, Qwen2.5-VL,
LLaVA-NeXT (the paper's llava-v1.6-mistral family), Idefics3 (SmolVLM) and Gemma 3. Other models
that load with ``AutoModelForImageTextToText`` + ``AutoProcessor`` should work without code
changes; a model whose forward computes its own 3-D rotary positions needs its model type in
``vlm_agent.models.policy.MULTIMODAL_ROPE_MODEL_TYPES``.

Importing this module registers torchvision-free processors for Qwen2-VL and Qwen2.5-VL: the
stock ones want a video processor that needs torchvision, which does not import on CPU-only torch
builds, and without a registered alternative ``AutoProcessor.from_pretrained`` silently returns a
bare tokenizer. The registered classes process images only (PIL backend), for tiny and real
checkpoints alike; :func:`load_processor` also uses them for checkpoints whose config names the
stock processor (real Qwen checkpoints do). Outside this package, ``import vlm_agent.models.loading``
before ``AutoProcessor.from_pretrained`` on a policy saved by this project.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import SafetensorError
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
)
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Qwen2VLImageProcessorOnly(Qwen2VLProcessor):
    """Qwen2-VL processor without the video processor (which needs torchvision)."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageProcessorOnly(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor (which needs torchvision)."""

    __init__ = Qwen2VLImageProcessorOnly.__init__


AutoProcessor.register(Qwen2VLConfig, Qwen2VLImageProcessorOnly, exist_ok=True)
AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageProcessorOnly, exist_ok=True)

#: Model types whose stock processor needs torchvision; their checkpoints name that processor in
#: processor_config.json, which AutoProcessor obeys over the registration above.
IMAGE_ONLY_PROCESSORS: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLImageProcessorOnly,
    "qwen2_5_vl": Qwen2_5_VLImageProcessorOnly,
}


@dataclass
class ModelSettings:
    """How to load the policy's backbone.

    Attributes:
        model_name_or_path: local directory (or hub id, where the hub is reachable) of an
            image-text-to-text model and its processor.
        dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16" or "float16".
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
        use_lora: wrap the model in LoRA adapters (PEFT) and train only those.
        lora_r: LoRA rank (paper: 128).
        lora_alpha: LoRA alpha (paper: 256).
        lora_dropout: LoRA dropout (paper: 0.05).
        lora_target_modules: "all-linear" (paper: all linear layers, output layer excluded) or
            a list of module names.
        gradient_checkpointing: trade compute for memory in the backward pass.
        attn_implementation: e.g. "sdpa", "eager", "flash_attention_2"; None: transformers' default.
        adapter_path: an existing LoRA adapter to load instead of creating a fresh one.
        adapter_trainable: whether a loaded adapter is trainable.
    """

    model_name_or_path: str
    dtype: str = "auto"
    device: str = "auto"
    use_lora: bool = True
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    adapter_path: str | None = None
    adapter_trainable: bool = True
    extra_model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_name_or_path = str(self.model_name_or_path)
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1 (paper: 128), got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0 (paper: 256), got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1) (paper: 0.05), got {self.lora_dropout}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (used in saved policies)."""
        return asdict(self)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bfloat16 on CUDA, float32 elsewhere; otherwise the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


class ModelLoadError(ValueError):
    """A model folder or hub id cannot be loaded; the message is one line that says what to do."""


class MissingModelError(ModelLoadError, FileNotFoundError):
    """A model path that does not exist, or a folder that holds no saved model."""


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _check_local_path(name_or_path: str) -> None:
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_local and not path.exists():
        raise MissingModelError(
            f"model path {name_or_path} does not exist; pass a directory holding a saved model "
            "(build a tiny one with `vlm-agent make-tiny-model --arch qwen2_vl DIR`)"
        )
    if path.exists() and not path.is_dir():
        raise MissingModelError(f"model path {name_or_path} is a file; pass the directory that save_pretrained wrote")
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise MissingModelError(
            f"{name_or_path} holds no config.json: it is not a saved Hugging Face model; "
            "pass the directory that save_pretrained wrote"
        )
    if not path.exists() and _hub_offline():
        raise MissingModelError(
            f"{name_or_path} is not a local folder, and the model hub is offline (HF_HUB_OFFLINE=1); download it "
            f"first (`hf download {name_or_path} --local-dir DIR`) and pass DIR, or unset HF_HUB_OFFLINE"
        )


def check_model_reference(name_or_path: str | Path) -> None:
    """Refuse, before anything is built, a model path that does not exist or holds no saved model,
    and a hub id while the hub is offline.

    Raises:
        MissingModelError: what is wrong and what to pass instead (one line).
    """
    _check_local_path(str(name_or_path))


def load_pretrained_model(name_or_path: str | Path, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForImageTextToText.from_pretrained`` with one clear error for a missing, offline or
    damaged model (e.g. a truncated ``model.safetensors``).

    Raises:
        ModelLoadError: what is wrong and what to do (one line).
    """
    name_or_path = str(name_or_path)
    _check_local_path(name_or_path)
    try:
        return AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError, SafetensorError) as error:
        raise ModelLoadError(
            f"cannot load an image-text-to-text model from {name_or_path} ({' '.join(str(error).split())[:300]}); "
            "check that the directory holds a complete, uncorrupted save_pretrained output"
        ) from error


def _local_model_type(name_or_path: str) -> str | None:
    config = Path(name_or_path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None


def load_processor(name_or_path: str | Path) -> ProcessorMixin:
    """Load the processor of a model; it must handle images and carry a chat template."""
    name_or_path = str(name_or_path)
    _check_local_path(name_or_path)
    processor_class = IMAGE_ONLY_PROCESSORS.get(_local_model_type(name_or_path) or "")
    try:
        if processor_class is not None:
            processor = processor_class.from_pretrained(name_or_path)
        else:
            processor = AutoProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot load the processor from {name_or_path} ({error})") from error
    if not isinstance(processor, ProcessorMixin) or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"{name_or_path} has no image processor (AutoProcessor returned {type(processor).__name__}); "
            "a vision-language model needs a processor_config.json / preprocessor_config.json next to its weights"
        )
    if not (processor.chat_template or getattr(processor.tokenizer, "chat_template", None)):
        raise ModelLoadError(
            f"the processor of {name_or_path} has no chat template; use an instruction-tuned checkpoint or "
            "save one with processor.chat_template = '...' and processor.save_pretrained(...)"
        )
    if processor.chat_template is None:
        processor.chat_template = processor.tokenizer.chat_template
    processor.tokenizer.padding_side = "left"
    return processor


def load_model(settings: ModelSettings) -> PreTrainedModel | PeftModel:
    """Load the model per ``settings``: dtype, device, LoRA (fresh or loaded), gradient checkpointing."""
    device = resolve_device(settings.device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(settings.dtype, device), **settings.extra_model_kwargs}
    if settings.attn_implementation is not None:
        kwargs["attn_implementation"] = settings.attn_implementation
    model = load_pretrained_model(settings.model_name_or_path, **kwargs)
    model.to(device)
    if settings.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input embeddings with requires_grad (frozen base + LoRA).
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # peft 0.21 calls a transformers attribute deprecated in 5.x; the warning is theirs, not the user's.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if settings.adapter_path is not None:
            try:
                model = PeftModel.from_pretrained(model, settings.adapter_path, is_trainable=settings.adapter_trainable)
            except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
                raise ModelLoadError(f"cannot load the LoRA adapter from {settings.adapter_path} ({error})") from error
        elif settings.use_lora:
            lora = LoraConfig(
                r=settings.lora_r,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=settings.lora_target_modules,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
    return model


def load_model_and_processor(settings: ModelSettings) -> tuple[PreTrainedModel | PeftModel, ProcessorMixin]:
    """Load model and processor (from the adapter directory when one is given, else the model's)."""
    processor_source = settings.adapter_path or settings.model_name_or_path
    processor = load_processor(processor_source)
    model = load_model(settings)
    return model, processor
