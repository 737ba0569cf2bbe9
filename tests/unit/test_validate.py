"""Every bad input is a one-line `ConfigError` that names the key, found before any process starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpcli.config.compose import RECIPE_PATH_ENV, compose
from mpcli.config.schema import RunConfig
from mpcli.config.validate import validate
from mpcli.errors import ConfigError

RECIPE = "gpt2-pipeline"
# GPT-2 tiny (4 blocks, d_model 128, 4 heads) in 2 pipeline stages with 8 microbatches, device auto.
BASE = ["model=gpt2-tiny"]


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECIPE_PATH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)


def load(overrides: list[str], *, cuda_devices: int = 0, conf: str = RECIPE) -> RunConfig:
    run = compose(conf, [*BASE, *overrides])
    validate(run, cuda_devices=cuda_devices)
    return run


def assert_config_error(excinfo: pytest.ExceptionInfo[ConfigError], *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message, f"not one line: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("cuda_devices", [0, 2])
def test_base_is_valid(cuda_devices: int) -> None:
    """The control: each case below fails because of its own overrides only."""
    run = load([], cuda_devices=cuda_devices)
    assert (run.model.n_layer, run.parallel.pp, run.parallel.microbatches) == (4, 2, 8)


def case(case_id: str, overrides: list[str], *fragments: str, gpus: int = 0) -> object:
    return pytest.param(overrides, gpus, list(fragments), id=case_id)


# Async TP's four needs met (tp2 + sequence parallel, compiled, on 2 GPUs); each case below undoes one.
ASYNC_TP = ["parallel.pp=1", "parallel.tp=2", "parallel.sequence_parallel=true", "parallel.async_tp=true"]

BAD_INPUTS = [
    # case(id, overrides, fragments the message must contain..., gpus=visible CUDA devices)
    case("unknown-key", ["train.stepz=3"], "train.stepz", "did you mean train.steps"),
    case("unknown-added-key", ["+train.stepz=3"], "train.stepz", "did you mean train.steps"),
    case("unknown-top-level-added-key", ["+foo=1"], "foo", "unknown config key"),
    case("wrong-type-int", ["train.steps=abc"], "train.steps=abc", "Integer"),
    case("wrong-type-float", ["train.lr=fast"], "train.lr=fast", "Float"),
    case("wrong-type-in-list", ["parallel.split=[2,x]"], "parallel.split", "x"),
    case("unknown-group-option", ["model=gpt2-huge"], "model", "gpt2-huge", "gpt2-medium"),
    case("zero-steps", ["train.steps=0"], "train.steps=0", "> 0"),
    case("negative-steps", ["train.steps=-5"], "train.steps=-5", "> 0"),
    case("pp>n_layer", ["parallel.pp=5"], "parallel.pp=5", "more pipeline stages (5) than blocks"),
    case("split-drops", ["parallel.split=[1,2]"], "parallel.split=[1, 2]", "drops"),
    case("split-repeats", ["parallel.split=[3,3]"], "parallel.split=[3, 3]", "repeats"),
    case("split-empty", ["parallel.split=[4,0]"], "parallel.split=[4, 0]", "at least one block"),
    case("split-negative", ["parallel.split=[5,-1]"], "parallel.split", "at least one block"),
    case("split-length", ["parallel.split=[1,1,2]"], "parallel.split", "per stage (2 stages)"),
    case("microbatches<pp", ["parallel.microbatches=1"], "parallel.microbatches=1", "pp=2"),
    case("d_model%n_head", ["model.n_head=3"], "model.d_model=128", "model.n_head=3"),
    case("tokens-without-path", ["data=tokens"], "data.path", "required"),
    case("cuda-without-gpu", ["topology.device=cuda"], "topology.device=cuda", "no CUDA device"),
    case("too-few-gpus", [], "parallel", "needs 2 GPUs", "1 are visible", gpus=1),
    case("too-few-gpus-dp", ["parallel.dp=2"], "parallel", "needs 4 GPUs", "2 are visible", gpus=2),
    case("nproc-mismatch", ["topology.nproc_per_node=3"], "topology.nproc_per_node=3"),
    case("nnodes-no-rdzv", ["topology.nnodes=2"], "topology.rdzv_endpoint", "nnodes > 1"),
    case("numa-mode", ["topology.numa_binding=rack"], "topology.numa_binding=rack", "core-complex", gpus=2),
    case("numa-on-cpu", ["topology.numa_binding=node"], "topology.numa_binding=node", "uses no GPU"),
    *[
        case(f"async-tp-{name}", [*ASYNC_TP, *undo], "parallel.async_tp=true needs", need, gpus=gpus)
        for name, undo, need, gpus in (
            ("tp1", ["parallel.tp=1"], "parallel.tp > 1", 2),
            ("no-sp", ["parallel.sequence_parallel=false"], "parallel.sequence_parallel=true", 2),
            ("cpu", [], "a CUDA device", 0),
            ("eager", ["train.compile=false"], "train.compile", 2),
        )
    ],
    case("bad-schedule", ["parallel.schedule=zigzag"], "parallel.schedule=zigzag", "gpipe"),
    case("delete-schema-key", ["~train.steps"], "train.steps", "cannot be removed"),
    # Tensor parallel, schedules and families.
    case("tp-heads", ["parallel.pp=1", "parallel.tp=3"], "model.n_head=4", "divisible by parallel.tp=3"),
    case(
        "sp-seq-len",
        ["parallel.tp=2", "parallel.sequence_parallel=true", "model.seq_len=33"],
        "model.seq_len=33",
        "parallel.tp=2",
    ),
    case("tp-world-gpus", ["parallel.tp=2"], "pp x dp x tp = 4", "needs 4 GPUs", gpus=2),
    case("virtual-single", ["parallel.virtual_stages=2"], "parallel.virtual_stages=2", "one stage per rank"),
    case(
        "virtual-missing", ["parallel.schedule=interleaved-1f1b"], "parallel.virtual_stages=1", "interleaves"
    ),
    case(
        "v-needs-two",
        ["parallel.schedule=zbv", "parallel.virtual_stages=3", "model.n_layer=6"],
        "parallel.virtual_stages=3",
        "exactly 2",
    ),
    case(
        "virtual-stages>blocks",
        ["parallel.schedule=looped-bfs", "parallel.virtual_stages=3"],
        "parallel.pp=2",
        "more pipeline stages (6)",
    ),
    case(
        "interleaved-microbatches",
        ["parallel.schedule=interleaved-1f1b", "parallel.virtual_stages=2", "parallel.microbatches=3"],
        "parallel.microbatches=3",
        "multiple of pp=2",
    ),
    case(
        "split-vs-virtual",
        ["parallel.schedule=zbv", "parallel.virtual_stages=2", "parallel.split=[2,2]"],
        "parallel.split",
        "(4 stages)",
    ),
    case(
        "dualpipev-microbatches",
        ["parallel.schedule=dualpipev", "parallel.virtual_stages=2", "parallel.microbatches=3"],
        "parallel.microbatches=3",
        "(4 stages: pp=2 x 2)",
    ),
    case("balance-mode", ["parallel.balance=magic"], "parallel.balance=magic", "flops"),
    case("compile-scope", ["train.compile_scope=model"], "train.compile_scope=model", "stage"),
    case(
        "compile-stage-with-tp",
        ["parallel.pp=1", "parallel.tp=2", "train.compile_scope=stage"],
        "train.compile_scope=stage",
        "train.compile_scope=block",
    ),
    case("tp-style", ["+parallel.tp_plan.head=diagonal"], "parallel.tp_plan.head=diagonal", "colwise"),
    case(
        "cnn-tp",
        ["model=cnn-small", "data=shapes", "parallel.pp=1", "parallel.tp=2"],
        "parallel.tp",
        "cnn family has no tensor-parallel plan",
    ),
    case(
        "sp-not-gpt2",
        ["model=mlp-small", "data=synthetic", "parallel.sequence_parallel=true"],
        "parallel.sequence_parallel",
        "model.family=mlp",
    ),
    case("family-data", ["model=cnn-small"], "data.name=bytes-corpus", "trains on shapes"),
    case("custom-target", ["model.family=custom", "model.blocks=[a]"], "model._target_", "required"),
    case("custom-blocks", ["model.family=custom", "model._target_=x.y"], "model.blocks", "submodules"),
    case(
        "custom-tp-plan",
        ["model.family=custom", "model._target_=x.y", "model.blocks=[a,b]", "parallel.pp=1", "parallel.tp=2"],
        "parallel.tp_plan",
        "custom model needs a plan",
    ),
]


@pytest.mark.parametrize(("overrides", "cuda_devices", "fragments"), BAD_INPUTS)
def test_bad_input_names_the_key(overrides: list[str], cuda_devices: int, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load(overrides, cuda_devices=cuda_devices)
    assert_config_error(excinfo, *fragments)


def test_enough_gpus_and_rdzv_endpoint_are_accepted() -> None:
    """Controls for the topology cases above."""
    assert load(["parallel.dp=2"], cuda_devices=4).parallel.dp == 2
    run = load(["topology.nnodes=2", "topology.rdzv_endpoint=node0:29500"])
    assert run.topology.rdzv_endpoint == "node0:29500"
    assert load(["topology.numa_binding=node"], cuda_devices=2).topology.numa_binding == "node"
    assert load(ASYNC_TP, cuda_devices=2).parallel.async_tp


def test_missing_recipe_suggests_close_name() -> None:
    with pytest.raises(ConfigError) as excinfo:
        compose("gpt2-pipelin")
    assert_config_error(excinfo, "conf=gpt2-pipelin", "did you mean conf=gpt2-pipeline")


def test_missing_recipe_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as excinfo:
        compose("zzz")
    assert_config_error(excinfo, "conf=zzz", "gpt2-pipeline")


def test_missing_recipe_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as excinfo:
        compose(str(missing))
    assert_config_error(excinfo, f"conf={missing}", "file not found")


def test_tokens_with_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    with pytest.raises(ConfigError) as excinfo:
        load(["data=tokens", f"data.path={missing}"])
    assert_config_error(excinfo, f"data.path={missing}", "not found")


def test_tokens_with_existing_path(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.bin"
    np.arange(1000, dtype=np.uint16).tofile(tokens)
    assert load(["data=tokens", f"data.path={tokens}", "model.seq_len=32"]).data.path == str(tokens)


def test_tokens_file_too_short_for_a_window(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.bin"
    np.arange(1000, dtype=np.uint16).tofile(tokens)  # 50 held-out tokens < seq_len 128
    with pytest.raises(ConfigError, match=r"data.path=.*too few tokens.*model.seq_len=128"):
        load(["data=tokens", f"data.path={tokens}"])


@pytest.mark.parametrize(
    ("overrides", "gpus", "offer"),
    [
        (["parallel=hybrid"], 2, "parallel.pp=1"),  # tensor parallel kept: it is what saves memory
        (["parallel=hybrid"], 1, "parallel.pp=1 parallel.tp=1"),
        (["parallel=3d"], 4, "parallel.dp=1"),
        (["parallel.schedule=zbv", "parallel.virtual_stages=2"], 1,
         "parallel.pp=1 parallel.virtual_stages=1 parallel.schedule=1f1b"),
    ],
)  # fmt: skip
def test_too_few_gpus_offers_the_nearest_layout_that_fits(
    overrides: list[str], gpus: int, offer: str
) -> None:
    expected = f"the nearest layout that fits: {offer} \\(or topology.device=cpu\\)"
    with pytest.raises(ConfigError, match=expected):
        validate(compose("gpt2-pipeline", [*overrides, "topology.device=auto"]), cuda_devices=gpus)
