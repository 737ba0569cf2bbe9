"""Consolidated weights: export of a checkpoint and model.init_from (mpcli's names, HF GPT-2 layout)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mpcli.checkpoint import store, weights
from mpcli.config.validate import validate
from mpcli.errors import ConfigError
from mpcli.models import build_model
from tests.ckpt_util import CFG, tiny_model, write_checkpoint

HF_VOCAB, HF_POSITIONS = 250, 20  # GPT-2 has 50257 tokens and 1024 positions; ours pads / cuts


def hf_gpt2_weights(n_layer: int, d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random GPT-2 weights in the Hugging Face layout: Conv1D weights stored (in, out), fused qkv."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.1

    sd = {"wte.weight": rand(HF_VOCAB, d), "wpe.weight": rand(HF_POSITIONS, d)}
    for i in range(n_layer):
        h = f"h.{i}."
        sd |= {
            h + "ln_1.weight": 1 + rand(d), h + "ln_1.bias": rand(d),
            h + "attn.c_attn.weight": rand(d, 3 * d), h + "attn.c_attn.bias": rand(3 * d),
            h + "attn.c_proj.weight": rand(d, d), h + "attn.c_proj.bias": rand(d),
            h + "attn.bias": torch.tril(torch.ones(1, 1, HF_POSITIONS, HF_POSITIONS)),  # a mask buffer
            h + "ln_2.weight": 1 + rand(d), h + "ln_2.bias": rand(d),
            h + "mlp.c_fc.weight": rand(d, 4 * d), h + "mlp.c_fc.bias": rand(4 * d),
            h + "mlp.c_proj.weight": rand(4 * d, d), h + "mlp.c_proj.bias": rand(d),
        }  # fmt: skip
    sd |= {"ln_f.weight": 1 + rand(d), "ln_f.bias": rand(d)}
    return {f"transformer.{k}": v for k, v in sd.items()}  # as GPT2LMHeadModel saves them


def hf_gpt2_logits(sd: dict[str, torch.Tensor], ids: torch.Tensor, n_layer: int, n_head: int) -> torch.Tensor:
    """GPT-2's forward as the Hugging Face implementation computes it (Conv1D: x @ W + b)."""
    w = {k.removeprefix("transformer."): v for k, v in sd.items()}
    b, t = ids.shape
    d = w["wte.weight"].shape[1]

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (d,), w[name + ".weight"], w[name + ".bias"], eps=1e-5)

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, t, n_head, d // n_head).transpose(1, 2)  # (B, n_head, T, head_dim)

    x = w["wte.weight"][ids] + w["wpe.weight"][:t]
    causal = torch.ones(t, t, dtype=torch.bool).triu(1)
    for i in range(n_layer):
        h = f"h.{i}."
        q, k, v = (norm(x, h + "ln_1") @ w[h + "attn.c_attn.weight"] + w[h + "attn.c_attn.bias"]).split(d, -1)
        scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d // n_head)
        y = (
            (scores.masked_fill(causal, float("-inf")).softmax(-1) @ heads(v))
            .transpose(1, 2)
            .reshape(b, t, d)
        )
        x = x + y @ w[h + "attn.c_proj.weight"] + w[h + "attn.c_proj.bias"]
        m = F.gelu(
            norm(x, h + "ln_2") @ w[h + "mlp.c_fc.weight"] + w[h + "mlp.c_fc.bias"], approximate="tanh"
        )
        x = x + m @ w[h + "mlp.c_proj.weight"] + w[h + "mlp.c_proj.bias"]
    return norm(x, "ln_f") @ w["wte.weight"].T  # lm_head is tied to wte


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, HF_VOCAB, (3, CFG.seq_len), generator=torch.Generator().manual_seed(1))


def test_hugging_face_gpt2_gives_the_reference_logits(tmp_path: Path, ids: torch.Tensor) -> None:
    hf = hf_gpt2_weights(CFG.n_layer, CFG.d_model)
    save_file(hf, str(tmp_path / "gpt2.safetensors"))
    cfg = replace(CFG, init_from=str(tmp_path / "gpt2.safetensors"))
    weights.check_init_from(cfg)
    model = tiny_model(seed=7)
    weights.load_weights([model], str(cfg.init_from), cfg)
    with torch.no_grad():
        ours = model(ids)
    reference = hf_gpt2_logits(hf, ids, CFG.n_layer, CFG.n_head)
    torch.testing.assert_close(ours[..., :HF_VOCAB], reference, rtol=0, atol=1e-5)
    assert torch.count_nonzero(ours[..., HF_VOCAB:]) == 0  # padded vocabulary rows are zero


def test_export_then_init_from_gives_identical_logits(tmp_path: Path, ids: torch.Tensor) -> None:
    source = tiny_model(seed=3)
    write_checkpoint(source, tmp_path / store.CHECKPOINTS, 5)
    exported = weights.export(tmp_path, tmp_path / "model.safetensors")
    assert "head.weight" not in exported and "wte.weight" in exported  # the tied head is stored once
    model = tiny_model(seed=4)
    weights.load_weights([model], str(tmp_path / "model.safetensors"), CFG)
    with torch.no_grad():
        assert torch.equal(model(ids), source(ids))
    weights.export(tmp_path, tmp_path / "bf16.safetensors", bf16=True)
    halves = load_file(str(tmp_path / "bf16.safetensors"))
    assert halves["wte.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(halves["wte.weight"].float(), source.wte.weight, rtol=1e-2, atol=1e-3)


def test_init_from_into_a_pipeline_stage_takes_its_part(tmp_path: Path) -> None:
    """A last stage (no embedding) takes its tied head copy from wte.weight."""
    source = tiny_model(seed=3)
    save_file(
        {k: v for k, v in source.state_dict().items() if k != "head.weight"}, str(tmp_path / "m.safetensors")
    )
    stage = build_model(CFG)
    stage.keep_stage([1], first=False, last=True)
    stage.to_empty(device=torch.device("cpu"))
    weights.load_weights([stage], str(tmp_path / "m.safetensors"), CFG)
    assert torch.equal(stage.head.weight, source.wte.weight)
    assert torch.equal(stage.blocks["1"].mlp.fc.weight, source.blocks["1"].mlp.fc.weight)


def test_an_incompatible_file_is_one_line_naming_the_tensor(tiny: type, tmp_path: Path) -> None:
    save_file(hf_gpt2_weights(2, 32), str(tmp_path / "gpt2.safetensors"))
    run = tiny(f"model.init_from={tmp_path / 'gpt2.safetensors'}", "model.n_layer=2", "model.d_model=64")
    with pytest.raises(
        ConfigError, match=r"tensor transformer.wte.weight \(for wte.weight\) has shape \[250, 32\]"
    ):
        validate(run, cuda_devices=0)
    with pytest.raises(
        ConfigError, match=r"has no tensor transformer.h.2.ln_1.weight \(for blocks.2.ln_1.weight\)"
    ):
        validate(tiny(f"model.init_from={tmp_path / 'gpt2.safetensors'}", "model.n_layer=3"), cuda_devices=0)
    with pytest.raises(ConfigError, match=r"^model.init_from=/no/such.safetensors: file not found$"):
        validate(tiny("model.init_from=/no/such.safetensors"), cuda_devices=0)
    validate(tiny(f"model.init_from={tmp_path / 'gpt2.safetensors'}", "model.n_layer=2"), cuda_devices=0)


def test_export_of_nothing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no complete checkpoint there"):
        weights.export(tmp_path, tmp_path / "out.safetensors")
