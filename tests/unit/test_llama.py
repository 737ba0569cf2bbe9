"""The llama family: Hugging Face's numerics, its checks before launch, its sizes and FLOPs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mpcli.checkpoint import weights
from mpcli.config.compose import compose
from mpcli.config.validate import validate
from mpcli.errors import ConfigError
from mpcli.models import FAMILIES, build_model, family_spec, materialize
from mpcli.models.llama import ffn_hidden

SMALL = ["model=llama-tiny", "model.n_layer=2", "model.d_model=64", "model.ffn_hidden=96",
         "model.seq_len=16", "model.n_head=4", "model.n_kv_head=2", "topology.device=cpu"]  # fmt: skip
HF_VOCAB = 250  # fewer than model.vocab=256: mpcli pads the vocabulary rows with zeros


def hf_llama(tied: bool) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=HF_VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_hugging_face_llama_weights_give_its_logits(tmp_path: Path, tied: bool) -> None:
    hf = hf_llama(tied)
    file = tmp_path / "llama.safetensors"
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if tied:
        state.pop("lm_head.weight")  # transformers saves a tied head once, as the embedding
    save_file(state, str(file))
    run = compose("gpt2-pipeline", [*SMALL, f"model.tie_embeddings={tied}", f"model.init_from={file}"])
    validate(run, cuda_devices=0)  # shapes checked against the file before launch
    model = build_model(run.model)
    materialize(model, torch.device("cpu"), seed=5)
    weights.load_weights([model], str(file), run.model)
    ids = torch.randint(0, HF_VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(ours[..., :HF_VOCAB], theirs, rtol=0, atol=1e-5)
    assert torch.count_nonzero(ours[..., HF_VOCAB:]) == 0


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.n_kv_head=3"], "model.n_kv_head=3: must divide model.n_head=4"),
        (["model.n_head=3"], "model.d_model=64: must be model.n_head=3 heads of an even size"),
        (["model.dropout=0.1"], "the llama family has no dropout"),
        (["model.rope_theta=0"], "model.rope_theta=0.0: must be > 0"),
        (["parallel.pp=1", "parallel.tp=4"], "model.n_kv_head=2: must be divisible by parallel.tp=4"),
        (["parallel.pp=1", "parallel.tp=2", "model.ffn_hidden=97"], "model.ffn_hidden=97: must be divisible"),
        (
            ["parallel.pp=1", "parallel.tp=2", "parallel.sequence_parallel=true", "model.seq_len=15"],
            "seq_len=15",
        ),
        (["data=synthetic"], "data.name=synthetic: model.family=llama trains on bytes-corpus or tokens"),
    ],
)
def test_a_bad_llama_config_is_one_line_before_launch(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        validate(compose("gpt2-pipeline", [*SMALL, *overrides]), cuda_devices=0)


@pytest.mark.parametrize(("size", "params"), [("1b", 1_235_814_400), ("8b", 8_030_261_248)])
def test_shipped_sizes_have_the_llama_3_parameter_counts(size: str, params: int) -> None:
    model = build_model(compose("gpt2-pipeline", [f"model=llama-{size}"]).model)
    assert sum(p.numel() for p in model.parameters()) == params


def test_flops_count_every_matmul_but_the_embedding_lookup() -> None:
    cfg = compose("gpt2-pipeline", SMALL).model
    model = build_model(cfg)
    matmul_params = sum(
        p.numel() for n, p in model.named_parameters() if p.dim() == 2 and n != "embed.weight"
    )
    attention = 12 * cfg.n_layer * cfg.d_model * cfg.seq_len
    assert model.flops_per_sample() == (6 * matmul_params + attention) * cfg.seq_len


def test_ffn_hidden_defaults_to_8_thirds_of_d_model_in_steps_of_256() -> None:
    cfg = compose("gpt2-pipeline", ["model=llama-tiny", "model.ffn_hidden=null", "model.d_model=4096"]).model
    assert ffn_hidden(cfg) == 11008  # Llama 2 7B's width


def test_every_config_group_names_a_registered_family() -> None:
    conf = Path(__file__).parents[2] / "conf" / "model"
    for file in conf.glob("*.yaml"):
        family = compose("gpt2-pipeline", [f"model={file.stem}"]).model.family
        assert family_spec(family) is FAMILIES[family], file.name
    with pytest.raises(ConfigError, match="model.family=gpt3: must be one of gpt2, llama, mlp, cnn, custom"):
        family_spec("gpt3")
