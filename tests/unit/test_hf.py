"""Hugging Face interop both ways: a checkpoint exported with --format hf loads in transformers with
the same logits, and a transformers directory (sharded or not) is a valid model.init_from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mpcli.checkpoint import store, weights
from mpcli.cli.app import app
from mpcli.config.compose import compose
from mpcli.config.validate import validate
from mpcli.errors import ConfigError
from mpcli.models import build_model, materialize
from tests.ckpt_util import tiny_model, write_checkpoint

transformers = pytest.importorskip("transformers")

FAMILIES = {
    "gpt2": ["model=gpt2-tiny", "model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.seq_len=16"],
    "llama": [
        "model=llama-tiny",
        "model.n_layer=2",
        "model.d_model=32",
        "model.n_head=4",
        "model.n_kv_head=2",
        "model.ffn_hidden=48",
        "model.seq_len=16",
    ],  # fmt: skip
}
IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))


def model_config(family: str, tied: bool) -> object:
    return compose("gpt2-pipeline", [*FAMILIES[family], f"model.tie_embeddings={tied}"]).model


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_export_hf_loads_in_transformers_with_the_same_logits(
    tmp_path: Path, family: str, tied: bool
) -> None:
    cfg = model_config(family, tied)
    model = tiny_model(seed=11, cfg=cfg)
    write_checkpoint(model, tmp_path / store.CHECKPOINTS, 4)
    out = tmp_path / "hf"
    result = CliRunner().invoke(
        app, ["checkpoint", "export", str(tmp_path), "--format", "hf", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is tied
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(IDS).logits, model(IDS), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_sharded_transformers_directory_is_an_init_from(tmp_path: Path, family: str) -> None:
    cfg = model_config(family, tied=False)
    source = tiny_model(seed=12, cfg=cfg)
    write_checkpoint(source, tmp_path / store.CHECKPOINTS, 1)
    weights.export(tmp_path, tmp_path / "hf", hf=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")  # transformers writes the index
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    init_from = f"model.init_from={tmp_path / 'sharded'}"
    run = compose("gpt2-pipeline", [*FAMILIES[family], "model.tie_embeddings=false", init_from])
    validate(run, cuda_devices=0)
    model = build_model(run.model)
    materialize(model, torch.device("cpu"), seed=0)
    weights.load_weights([model], str(run.model.init_from), run.model)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), source(IDS), rtol=0, atol=1e-5)


def test_an_index_naming_a_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../x.safetensors"}})
    )
    run = compose("gpt2-pipeline", [*FAMILIES["llama"], f"model.init_from={tmp_path}", "topology.device=cpu"])
    with pytest.raises(ConfigError, match="names a shard outside the directory"):
        validate(run, cuda_devices=0)


def test_export_hf_of_a_family_without_a_hf_layout_is_one_line(tmp_path: Path) -> None:
    cfg = compose("gpt2-pipeline", ["model=mlp-small", "data=synthetic"]).model
    write_checkpoint(tiny_model(cfg=cfg), tmp_path / store.CHECKPOINTS, 1)
    result = CliRunner().invoke(app, ["checkpoint", "export", str(tmp_path), "--format", "hf", "-o", "x"])
    assert result.exit_code == 2 and "the mlp family has no Hugging Face layout" in result.stderr
