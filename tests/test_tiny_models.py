"""Tiny offline VLMs: they build deterministically, reload with the Auto classes, and fail loudly when broken."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlm_agent.models.loading import ModelSettings, load_model, load_processor
from vlm_agent.prompting.templates import chat_messages
from vlm_agent.prompting.env_prompts import prompt_for
from vlm_agent.training.ppo_config import TINY_ARCHITECTURES
from vlm_agent.demo.tiny_models import make_tiny_model

# The placeholder the chat template writes, and the token the processor expands it into.
IMAGE_PLACEHOLDERS = {
    "qwen2_vl": ("<|image_pad|>", "<|image_pad|>"),
    "qwen2_5_vl": ("<|image_pad|>", "<|image_pad|>"),
    "llava_next": ("<image>", "<image>"),
    "idefics3": ("<image>", "<image>"),
    "gemma3": ("<start_of_image>", "<image_soft_token>"),
}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_tiny_model_reloads_offline_and_runs(arch: str, tiny_model_dir: Callable[[str], Path]) -> None:
    path = tiny_model_dir(arch)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.model_type == arch
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 3e6
    assert processor.image_processor is not None and processor.chat_template
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)

    prompt = prompt_for("gym_cards/NumberLine-v0").render("", ["-", "+"])
    text = processor.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
    placeholder, image_token = IMAGE_PLACEHOLDERS[arch]
    assert placeholder in text and prompt in text
    image = np.zeros((300, 300, 3), dtype=np.uint8)
    inputs = processor(images=[[image]], text=[text], return_tensors="pt")
    image_token_id = processor.tokenizer.convert_tokens_to_ids(image_token)
    assert (inputs["input_ids"] == image_token_id).sum() > 1, "the placeholder expands to one token per image feature"
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == len(processor.tokenizer) and torch.isfinite(logits).all()


def test_tokenizer_splits_digits_and_round_trips(tiny_model_dir: Callable[[str], Path]) -> None:
    tokenizer = load_processor(tiny_model_dir("qwen2_vl")).tokenizer
    answer = '{"cards": [10, 12], "thoughts": "10 + 2 = 12", "action": "="}'
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == answer
    assert "10" not in tokenizer.convert_ids_to_tokens(ids), "digits are split one per token"
    assert tokenizer.padding_side == "left"


def test_same_seed_gives_identical_files_and_other_seed_other_weights(tmp_path: Path) -> None:
    first = make_tiny_model("qwen2_vl", tmp_path / "a", seed=3)
    second = make_tiny_model("qwen2_vl", tmp_path / "b", seed=3)
    other = make_tiny_model("qwen2_vl", tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_cli_entry_builds_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vlm_agent.cli.main import main

    assert main(["make-tiny-model", "--arch", "llava_next", "--num_layers", "1", str(tmp_path / "m")]) == 0
    assert "random parameters" in capsys.readouterr().out
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "m").config.text_config.num_hidden_layers == 1


def test_unknown_architecture_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qwen2_vl, qwen2_5_vl, llava_next"):
        make_tiny_model("gpt2", tmp_path)


def test_lora_wraps_all_linear_layers(tiny_model_dir: Callable[[str], Path]) -> None:
    model = load_model(ModelSettings(tiny_model_dir("qwen2_vl"), lora_r=4, lora_alpha=8))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("visual" in name for name in trainable) and any("language_model" in name for name in trainable)
    assert not any("lm_head" in name for name in trainable)


def test_missing_path_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make-tiny-model"):
        load_model(ModelSettings(str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_processor(tmp_path)


def test_corrupt_checkpoint_gives_one_clear_error(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir("qwen2_vl"), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot load an image-text-to-text model"):
        load_model(ModelSettings(broken, use_lora=False))


def test_processor_without_chat_template_is_rejected(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir("llava_next"), bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        load_processor(bare)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="dtype"):
        ModelSettings("x", dtype="float8")
    with pytest.raises(ValueError, match="lora_dropout"):
        ModelSettings("x", lora_dropout=1.0)


def test_qwen_checkpoint_naming_the_stock_processor_loads_without_torchvision(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    """Real Qwen2-VL checkpoints name `Qwen2VLProcessor` (which wants torchvision) in their configs."""
    import json

    real_layout = tmp_path / "qwen_like"
    shutil.copytree(tiny_model_dir("qwen2_vl"), real_layout)
    processor_config = json.loads((real_layout / "processor_config.json").read_text())
    (real_layout / "processor_config.json").unlink()
    image_config = {**processor_config["image_processor"], "processor_class": "Qwen2VLProcessor"}
    (real_layout / "preprocessor_config.json").write_text(json.dumps(image_config))
    tokenizer_config = json.loads((real_layout / "tokenizer_config.json").read_text())
    (real_layout / "tokenizer_config.json").write_text(
        json.dumps({**tokenizer_config, "processor_class": "Qwen2VLProcessor"})
    )

    processor = load_processor(real_layout)
    assert type(processor).__name__ == "Qwen2VLImageProcessorOnly"
    text = processor.apply_chat_template(chat_messages("hi"), tokenize=False, add_generation_prompt=True)
    inputs = processor(images=[[np.zeros((112, 112, 3), dtype=np.uint8)]], text=[text], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_the_alfworld_tiny_model_reads_every_name_as_one_token(tmp_path: Path) -> None:
    """A tiny tokenizer that split 'sidetable' into letters left the model answering 'go to 1'."""
    from vlm_agent.demo.tiny_models import make_tiny_model_for_env

    pytest.importorskip("alfworld")
    folder = make_tiny_model_for_env("qwen2_vl", tmp_path / "alfworld", "gym_cards/ALFWorld-v0", seed=1)
    tokenizer = load_processor(folder).tokenizer
    for command, name in (("go to sidetable 1", " sidetable"), ("move peppershaker 1 to garbagecan 2", " peppershaker"),
                          ("take saltshaker 1 from diningtable 1", " diningtable")):
        pieces = [tokenizer.decode([i]) for i in tokenizer(command, add_special_tokens=False)["input_ids"]]
        assert name in pieces, pieces
    # Card games: the same files as make_tiny_model's.
    card = make_tiny_model_for_env("qwen2_vl", tmp_path / "card", "gym_cards/NumberLine-v0", seed=1)
    plain = make_tiny_model("qwen2_vl", tmp_path / "plain", seed=1)
    assert (card / "tokenizer.json").read_bytes() == (plain / "tokenizer.json").read_bytes()
