"""Every method.kind on the tiny model: what trains, what stays put, and save -> load ≡ trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneforge.config.schema import Config
from tuneforge.errors import ConfigError, ModelError
from tuneforge.train import adapters
from tuneforge.train.methods import (
    decoder_layers,
    load_trained,
    optimizer_parameters,
    prepare_model,
    save_trained,
    sequence_logits,
    trained_top_layers,
    update_unfreezing,
)

CPU = torch.device("cpu")
KINDS = {
    "full": {},
    "freeze": {"train_layers": 1},
    "lora": {},
    "dora": {"rslora": True},
    "qlora": {},
    "ia3": {},
    "prompt": {"virtual_tokens": 4},
    "prefix": {"virtual_tokens": 4},
}
# what the trainable parameters of each PEFT kind are called
ADAPTER_MARKS = {
    "lora": ("lora_",),
    "dora": ("lora_",),
    "qlora": ("lora_",),
    "ia3": ("ia3_",),
    "prompt": ("prompt_encoder",),
    "prefix": ("prompt_encoder",),
}


def make_config(model_dir: Path, **method) -> Config:
    """A config for the tiny model; dropout off so that forward passes are deterministic."""
    spec = {"r": 4, "alpha": 8, "dropout": 0.0, **method}
    return Config(
        name="t", model={"name_or_path": str(model_dir)}, data={"path": "unused"}, method=spec
    )


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 600, (2, 12), generator=torch.Generator().manual_seed(seed))


def train_steps(model: torch.nn.Module, params: list, steps: int) -> None:
    """AdamW steps (lr 1e-2, no weight decay) on next-token loss over a random batch."""
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    model.train()
    for step in range(steps):
        ids = batch(step)
        logits = sequence_logits(model, ids)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def logits_of(model: torch.nn.Module, seed: int = 99) -> torch.Tensor:
    return sequence_logits(model, batch(seed))


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_method_trains_exactly_its_parameters_and_reloads(
    kind: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    config = make_config(tiny_model_dir, kind=kind, adapter_name="mine", **KINDS[kind])
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    if kind in ADAPTER_MARKS:
        assert all(any(m in n for m in ADAPTER_MARKS[kind]) for n in trainable)
        assert all(".mine" in n for n in trainable)  # added under method.adapter_name
    before = snapshot(model)
    # two steps: LoRA's B starts at zero, so A's gradient is zero until B has moved once
    train_steps(model, optimizer_parameters(model, config.method), steps=2)
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable  # every trained parameter moved, every frozen one is bit-identical

    expected = logits_of(model)
    folder = save_trained(model, config.method, tmp_path)
    assert folder == ("adapter" if kind in ADAPTER_MARKS else "model")
    assert list((tmp_path / folder).glob("*.safetensors"))
    assert not list((tmp_path / folder).rglob("*.bin"))
    reloaded = load_trained(str(tiny_model_dir), config, tmp_path, torch.float32, CPU)
    assert not any(p.requires_grad for p in reloaded.parameters())
    # NF4 quantization of the same fp32 weights is deterministic, so qlora's reloaded
    # base is bit-identical; the looser bound leaves room for 4-bit matmul kernels
    # that may sum in a different order (GPU backends)
    tolerance = 1e-4 if kind == "qlora" else 1e-5
    assert (logits_of(reloaded) - expected).abs().max() <= tolerance


def test_qlora_base_is_nf4_with_fp32_compute(tiny_model_dir: Path) -> None:
    from bitsandbytes.nn import Linear4bit

    config = make_config(tiny_model_dir, kind="qlora", double_quant=True)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    quantized = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 7 * 2  # q, k, v, o, gate, up, down in both layers
    for module in quantized:
        assert module.weight.dtype == torch.uint8 and not module.weight.requires_grad
        assert module.weight.quant_state.quant_type == "nf4"
        assert module.weight.quant_state.nested  # double quantization
        assert module.compute_dtype == torch.float32


def test_freeze_trains_only_the_top_layer(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, kind="freeze", train_layers=1)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.layers.1.") for n in trainable)
    assert trained_top_layers(model) == 1
    assert optimizer_parameters(model, config.method) == [
        p for p in model.parameters() if p.requires_grad
    ]


def test_gradual_unfreezing_adds_one_layer_per_period(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, kind="freeze", train_layers=1, unfreeze_every=1)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    params = optimizer_parameters(model, config.method)
    bottom = list(decoder_layers(model)[0].parameters())
    assert all(any(p is q for q in params) for p in bottom)  # held from the start
    before = snapshot(model)
    train_steps(model, params, steps=1)
    # in the optimizer but without gradients: AdamW leaves the frozen layer alone
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if "layers.0." in n)
    assert update_unfreezing(model, config.method, step=1) == 2
    train_steps(model, params, steps=1)
    assert update_unfreezing(model, config.method, step=2) is None  # already all layers
    assert trained_top_layers(model) == 2
    # the optimizer picks the newly unfrozen layer up without being rebuilt
    assert all(
        not torch.equal(before[n], p) for n, p in model.named_parameters() if "layers.0." in n
    )


def test_unfreezing_waits_for_its_period(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, kind="freeze", train_layers=1, unfreeze_every=2)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    assert update_unfreezing(model, config.method, step=1) is None
    assert trained_top_layers(model) == 1
    assert update_unfreezing(model, config.method, step=2) == 2
    lora = make_config(tiny_model_dir, kind="lora").method
    assert update_unfreezing(model, lora, step=10) is None  # only freeze unfreezes


def test_freeze_by_module_name_includes_a_tied_head(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, kind="freeze", train_modules=["norm", "lm_head"])
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    assert "lm_head.weight" in trainable  # tied to the embeddings in the tiny model
    assert all(
        "norm" in n or n in {"lm_head.weight", "model.embed_tokens.weight"} for n in trainable
    )


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ({"train_layers": 3}, "method.train_layers 3"),
        ({"train_modules": ["no_such_module"]}, "method.train_modules"),
    ],
)
def test_freeze_errors_name_the_key(tiny_model_dir: Path, method: dict, key: str) -> None:
    config = make_config(tiny_model_dir, kind="freeze", **method)
    with pytest.raises(ConfigError, match=key):
        prepare_model(str(tiny_model_dir), config, torch.float32, CPU)


def test_new_adapter_trains_on_a_base_carrying_merged_base_adapters(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    first = make_config(tiny_model_dir, kind="lora", adapter_name="first")
    model = prepare_model(str(tiny_model_dir), first, torch.float32, CPU)
    train_steps(model, optimizer_parameters(model, first.method), steps=2)
    save_trained(model, first.method, tmp_path / "a")
    merged = adapters.merge(
        load_trained(str(tiny_model_dir), first, tmp_path / "a", torch.float32, CPU)
    )
    with model.disable_adapter():
        base_logits = logits_of(model)
    assert (logits_of(merged) - base_logits).abs().max() > 1e-3  # adapter A does something

    second = make_config(
        tiny_model_dir,
        kind="lora",
        adapter_name="second",
        base_adapters=[str(tmp_path / "a/adapter")],
    )
    model = prepare_model(str(tiny_model_dir), second, torch.float32, CPU)
    # LoRA's B starts at zero: before training, the new adapter is a no-op on base + A
    assert (logits_of(model) - logits_of(merged)).abs().max() <= 1e-5
    train_steps(model, optimizer_parameters(model, second.method), steps=2)
    save_trained(model, second.method, tmp_path / "b")
    reloaded = load_trained(str(tiny_model_dir), second, tmp_path / "b", torch.float32, CPU)
    assert (logits_of(reloaded) - logits_of(model)).abs().max() <= 1e-5


def test_base_adapters_must_be_safetensors_adapter_folders(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text("{}")
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    for folder, why in (
        (tmp_path / "missing", "directory not found"),
        (pickled, "no adapter_model"),
    ):
        config = make_config(tiny_model_dir, kind="lora", base_adapters=[str(folder)])
        with pytest.raises(ModelError, match=f"method.base_adapters '{folder}': {why}"):
            prepare_model(str(tiny_model_dir), config, torch.float32, CPU)


def test_prompt_tuning_logits_line_up_with_the_input(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, kind="prompt", virtual_tokens=5)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    ids = batch()
    with torch.no_grad():
        raw = model(input_ids=ids).logits
        aligned = sequence_logits(model, ids)
    assert raw.shape[1] == ids.shape[1] + 5
    assert aligned.shape[1] == ids.shape[1]
    assert torch.equal(aligned, raw[:, 5:])


def test_load_trained_says_when_nothing_was_saved(tiny_model_dir: Path, tmp_path: Path) -> None:
    for kind in ("full", "lora"):
        config = make_config(tiny_model_dir, kind=kind)
        with pytest.raises(ModelError, match="train output"):
            load_trained(str(tiny_model_dir), config, tmp_path, torch.float32, CPU)
