"""DCP's `.metadata` is a pickle: crafted files must be refused before anything in them runs.

Every attack below would create a marker file if its payload ran; each test asserts the marker is
absent and that the refusal is one `UnsafeCheckpoint` line naming the file. The pickles are built
from pickle's opcodes by hand where `pickle.dumps` cannot express the attack (dotted names, getattr
chains, BUILD on a class).
"""

from __future__ import annotations

import builtins
import copyreg
import functools
import importlib
import io
import os
import pickle
import struct
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    _MEM_FORMAT_ENCODING,
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from typer.testing import CliRunner

from mpcli.checkpoint import safe_metadata, store
from mpcli.checkpoint.safe_metadata import ALLOWED, SafeReader
from mpcli.cli.app import app
from mpcli.config.validate import validate
from mpcli.errors import ConfigError, UnsafeCheckpoint
from tests.ckpt_util import tiny_model, write_checkpoint

METADATA_MODULE = Metadata.__module__

# ---- building pickles ------------------------------------------------------------------------------


def _text(value: str, protocol: int) -> bytes:
    """A str on the stack: UNICODE (text) for protocol 0, BINUNICODE otherwise."""
    if protocol == 0:
        return pickle.UNICODE + value.encode("raw_unicode_escape") + b"\n"
    data = value.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _global(module: str, name: str, protocol: int) -> bytes:
    """GLOBAL up to protocol 3; STACK_GLOBAL (which takes dotted names) from protocol 4."""
    if protocol >= 4:
        return _text(module, protocol) + _text(name, protocol) + pickle.STACK_GLOBAL
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _call(func: bytes, *args: bytes) -> bytes:
    return func + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def _pickle(body: bytes, protocol: int) -> bytes:
    head = pickle.PROTO + bytes([protocol]) if protocol >= 2 else b""
    return head + body + pickle.STOP


def _touch_command(marker: Path) -> str:
    return f"touch {marker}"


def _open_source(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class Reduce:
    """pickle.dumps(Reduce(f, args)) is a pickle that calls f(*args) when loaded."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def plant(marker: Path) -> None:
    """What a payload does if it runs: leave a file behind."""
    marker.write_text("ran")


# ---- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A real DCP save of a small state dict of tensors (no process group)."""
    state = {
        "model.w": torch.randn(4, 3),
        "model.half": torch.zeros(5, dtype=torch.bfloat16),
        "optim.step": torch.tensor(3.0),
        "rng.0.cpu": torch.get_rng_state(),
        "model.index": torch.arange(6).view(2, 3)[:, 1:],
    }
    path = tmp_path / "ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(path), no_dist=True)
    return path


def _crafted(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "crafted"
    path.mkdir(exist_ok=True)
    (path / store.DCP_METADATA).write_bytes(data)
    return path


def _refused(path: Path, marker: Path, match: str) -> UnsafeCheckpoint:
    """Read `path`'s metadata; it must be refused in one line naming the file, the payload not run."""
    with pytest.raises(UnsafeCheckpoint) as caught:
        SafeReader(path).read_metadata()
    message = str(caught.value)
    assert message.startswith(f"{path / store.DCP_METADATA}: "), message
    assert "\n" not in message and match in message, message
    assert isinstance(caught.value, ConfigError)  # the CLI turns it into one line, exit code 2
    assert not marker.exists(), "the payload ran"
    return caught.value


def _plain_metadata() -> Metadata:
    props = TensorProperties(dtype=torch.float32)
    chunk = ChunkStorageMetadata(offsets=torch.Size([0]), sizes=torch.Size([2]))
    entry = TensorStorageMetadata(properties=props, size=torch.Size([2]), chunks=[chunk])
    storage = {MetadataIndex("w", [0], 0): _StorageInfo("__0_0.distcp", 0, 8)}
    return Metadata(state_dict_metadata={"w": entry}, storage_data=storage)


# ---- payloads through __reduce__ ------------------------------------------------------------------

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
# Dataclasses pickle without copyreg from protocol 2 on; DCP writes the default protocol (4 or 5).
REAL_PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)
REDUCERS = {
    "os.system": lambda m: Reduce(os.system, _touch_command(m)),
    "builtins.exec": lambda m: Reduce(builtins.exec, _open_source(m)),
    "builtins.eval": lambda m: Reduce(builtins.eval, _open_source(m)),
    "subprocess.Popen": lambda m: Reduce(subprocess.Popen, ["touch", str(m)]),
    "tests.plant": lambda m: Reduce(plant, m),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("target", REDUCERS)
def test_reduce_to_a_dangerous_callable_is_refused(
    tmp_path: Path, marker: Path, target: str, protocol: int
) -> None:
    # fix_imports=False keeps Python 3 names under protocols 0-2 (with it, builtins is __builtin__)
    payload = pickle.dumps(REDUCERS[target](marker), protocol=protocol, fix_imports=False)
    func = REDUCERS[target](marker).func
    named = f"{pickle.whichmodule(func, func.__qualname__)}.{func.__qualname__}"  # os.system is posix.system
    _refused(_crafted(tmp_path, payload), marker, f"it names {named}, which a checkpoint never holds")


def test_the_old_pickle_error_type_still_catches_a_refusal(tmp_path: Path, marker: Path) -> None:
    path = _crafted(tmp_path, pickle.dumps(Reduce(os.system, _touch_command(marker))))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        store.tensors(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", REAL_PROTOCOLS)
def test_a_forbidden_global_nested_inside_valid_metadata_is_refused(
    tmp_path: Path, marker: Path, protocol: int
) -> None:
    """The outer objects are all allowed; the payload hides in planner_data and in a dtype's place."""
    metadata = _plain_metadata()
    metadata.planner_data = {"w": ("w", Reduce(os.system, _touch_command(marker)))}
    _refused(_crafted(tmp_path, pickle.dumps(metadata, protocol=protocol)), marker, "posix.system")
    metadata = _plain_metadata()
    metadata.state_dict_metadata["w"].properties.dtype = Reduce(plant, marker)  # type: ignore[assignment]
    _refused(_crafted(tmp_path, pickle.dumps(metadata, protocol=protocol)), marker, "plant")


# ---- dotted names: attribute traversal through every admitted module ---------------------------------


def _dotted_attacks() -> list[Any]:
    """(module, dotted name) for each module the allow-list admits; each resolves to a real object."""
    cases = []
    for module_name in sorted({module for module, _ in ALLOWED}):
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pathlib._local exists from Python 3.13 on
            continue
        first = next(name for mod, name in sorted(ALLOWED) if mod == module_name)
        for dotted in ("os.system", f"{first}.__class__", f"{first}.__init__.__globals__", "sys.modules"):
            if _resolves(module, dotted):
                cases.append(pytest.param(module_name, dotted, id=f"{module_name}:{dotted}"))
    return cases


def _resolves(module: object, dotted: str) -> bool:
    try:
        functools.reduce(getattr, dotted.split("."), module)
    except AttributeError:
        return False
    return True


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("module", "dotted"), _dotted_attacks())
def test_dotted_names_are_never_followed(
    tmp_path: Path, marker: Path, module: str, dotted: str, protocol: int
) -> None:
    """pickle's own find_class follows `a.b.c` through attributes under protocol 4+ (STACK_GLOBAL);
    GLOBAL (protocols 0-3) carries the same name and is refused the same way."""
    body = _call(_global(module, dotted, protocol), _text(_touch_command(marker), protocol))
    _refused(_crafted(tmp_path, _pickle(body, protocol)), marker, f"it names {module}.{dotted}, which")


def test_every_admitted_module_has_a_path_to_os_system() -> None:
    """Keeps the dotted-name cases meaningful: the DCP modules themselves import os."""
    reachable = {param.values[0] for param in _dotted_attacks() if param.values[1] == "os.system"}
    assert {METADATA_MODULE, _StorageInfo.__module__, "torch", "torch.serialization"} <= reachable


# Callables and modules near the allowed ones: same module, other name; or a gadget elsewhere.
OTHER_GLOBALS = [
    ("operator", "attrgetter"),
    ("functools", "partial"),
    ("importlib", "import_module"),
    ("collections", "OrderedDict"),
    ("torch", "load"),
    ("torch", "Tensor"),
    ("torch", "os"),
    ("torch.serialization", "load"),
    ("torch.distributed.checkpoint.filesystem", "os"),
    ("torch.distributed.checkpoint.filesystem", "FileSystemReader"),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_getattr_and_reconstructor_chains_are_refused(tmp_path: Path, marker: Path, protocol: int) -> None:
    """getattr(Metadata.__init__, '__globals__')['os'].system(...), in steps; and copyreg's helper."""
    metadata_cls = _global(METADATA_MODULE, "Metadata", protocol)
    init = _call(_global("builtins", "getattr", protocol), metadata_cls, _text("__init__", protocol))
    _refused(_crafted(tmp_path, _pickle(init, protocol)), marker, "it names builtins.getattr")
    rebuild = _call(
        _global("copyreg", "_reconstructor", protocol), metadata_cls, _global("builtins", "object", protocol)
    )
    _refused(_crafted(tmp_path, _pickle(rebuild, protocol)), marker, "it names copyreg._reconstructor")
    for module, name in OTHER_GLOBALS:
        body = _call(_global(module, name, protocol), _text(str(marker), protocol))
        _refused(_crafted(tmp_path, _pickle(body, protocol)), marker, f"it names {module}.{name}")


def test_inst_opcode_and_extension_codes_go_through_the_allow_list(tmp_path: Path, marker: Path) -> None:
    inst = pickle.MARK + _text(_touch_command(marker), 0) + pickle.INST + b"os\nsystem\n"
    _refused(_crafted(tmp_path, _pickle(inst, 0)), marker, "it names os.system")
    # EXT2 <code> is looked up in copyreg's extension registry; the (module, name) found there is then
    # resolved by find_class like any global.
    copyreg.add_extension("os", "system", 0xF00D)
    try:
        body = pickle.EXT2 + struct.pack("<H", 0xF00D) + _text(_touch_command(marker), 2) + pickle.TUPLE1
        _refused(_crafted(tmp_path, _pickle(body + pickle.REDUCE, 2)), marker, "it names os.system")
    finally:
        copyreg.remove_extension("os", "system", 0xF00D)


def test_persistent_ids_are_refused(tmp_path: Path, marker: Path) -> None:
    body = _text("anything", 2) + pickle.BINPERSID
    _refused(_crafted(tmp_path, _pickle(body, 2)), marker, "persistent reference")


def test_names_from_the_file_cannot_break_the_one_line(tmp_path: Path, marker: Path) -> None:
    body = _call(_global("os", "system\n[/red]", 4), _text("true", 4))
    error = _refused(_crafted(tmp_path, _pickle(body, 4)), marker, "it names os.system\\x0a\\x5b")
    assert "[" not in str(error).split(": refused: ")[1]


# ---- BUILD: state only onto fresh DCP dataclass instances --------------------------------------------


def _slot_state(state: dict[str, str | int]) -> bytes:
    """(None, {name: value}): BUILD applies the dict with setattr, so a class would be changed for good."""
    items = b"".join(
        _text(k, 4) + (_text(v, 4) if isinstance(v, str) else pickle.BININT1 + bytes([v]))
        for k, v in state.items()
    )
    return pickle.NONE + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.TUPLE2


def _build_on(target: bytes, state: dict[str, str | int]) -> bytes:
    return _pickle(target + _slot_state(state) + pickle.BUILD, 4)


def test_build_cannot_change_a_class_an_enum_member_or_the_layout_helper(
    tmp_path: Path, marker: Path
) -> None:
    before = dict(vars(Metadata))
    path = _crafted(tmp_path, _build_on(_global(METADATA_MODULE, "Metadata", 4), {"planner_data": "x"}))
    _refused(path, marker, "it sets the state of class Metadata, which a checkpoint never does")
    assert dict(vars(Metadata)) == before
    member = _call(_global(METADATA_MODULE, "_MEM_FORMAT_ENCODING", 4), pickle.BININT1 + b"\x00")
    _refused(_crafted(tmp_path, _build_on(member, {"_value_": 7})), marker, "_MEM_FORMAT_ENCODING")
    assert _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT.value == 0
    layout = _global("torch.serialization", "_get_layout", 4)
    _refused(_crafted(tmp_path, _build_on(layout, {"cache": "x"})), marker, "it sets the state of function")


def test_allowed_layout_helper_is_ours_not_torchs() -> None:
    """torch's _get_layout keeps a cache on the function; the stand-in reads a frozen table."""
    assert ALLOWED[("torch.serialization", "_get_layout")] is safe_metadata._layout
    assert safe_metadata._layout("torch.strided") is torch.strided
    with pytest.raises(pickle.UnpicklingError):
        safe_metadata._layout("os.system")


# ---- non-tensor entries: DCP would read them with torch.load(weights_only=False) --------------------


def _save_with_a_pickled_entry(path: Path, marker: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(
            {"rng.0.cpu": Reduce(plant, marker), "w": torch.ones(2)}, checkpoint_id=str(path), no_dist=True
        )


def test_plain_dcp_would_run_a_pickled_entry(tmp_path: Path, marker: Path) -> None:
    """Why non-tensor entries are refused: DCP's default planner unpickles them unrestricted."""
    _save_with_a_pickled_entry(tmp_path / "ckpt", marker)
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"rng.0.cpu": None}, checkpoint_id=str(tmp_path / "ckpt"), no_dist=True)
    assert marker.exists()


def test_a_bytes_entry_is_refused_before_dcp_reads_it(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "ckpt"
    _save_with_a_pickled_entry(path, marker)
    _refused(path, marker, "it declares a non-tensor entry")
    with pytest.raises(UnsafeCheckpoint, match="non-tensor entry"):
        store.tensors(path)  # what resume and `checkpoint inspect/export` read before DCP does
    with pytest.raises(CheckpointException, match="non-tensor entry"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"rng.0.cpu": None}, storage_reader=SafeReader(path), no_dist=True)
    assert not marker.exists()


@pytest.mark.parametrize("entry", [ChunkStorageMetadata(torch.Size([0]), torch.Size([1])), "text", 3])
def test_any_entry_that_is_not_a_tensor_is_refused(tmp_path: Path, marker: Path, entry: object) -> None:
    assert (BytesStorageMetadata.__module__, BytesStorageMetadata.__qualname__) not in ALLOWED
    metadata = _plain_metadata()
    metadata.state_dict_metadata["x"] = entry  # type: ignore[assignment]
    _refused(_crafted(tmp_path, pickle.dumps(metadata)), marker, "entry x is not a tensor")


@pytest.mark.parametrize("name", ["../elsewhere.distcp", "/etc/passwd", "..", "sub/dir.distcp"])
def test_shard_files_outside_the_checkpoint_are_refused(tmp_path: Path, marker: Path, name: str) -> None:
    metadata = _plain_metadata()
    metadata.storage_data = {MetadataIndex("w", [0], 0): _StorageInfo(name, 0, 8)}
    _refused(_crafted(tmp_path, pickle.dumps(metadata)), marker, "is not a file of this checkpoint")


# ---- corrupt files --------------------------------------------------------------------------------

CORRUPT = "not a torch.distributed.checkpoint metadata file"


def test_corrupt_and_missing_files_are_one_line(tmp_path: Path, marker: Path, checkpoint: Path) -> None:
    data = (checkpoint / store.DCP_METADATA).read_bytes()
    _refused(_crafted(tmp_path, data[: len(data) // 2]), marker, f"{CORRUPT} (truncated or corrupt)")
    _refused(_crafted(tmp_path, b""), marker, f"{CORRUPT} (truncated or corrupt)")
    _refused(_crafted(tmp_path, b'{"step": 2}\n'), marker, f"{CORRUPT} (truncated or corrupt)")
    _refused(
        _crafted(tmp_path, pickle.dumps({"state_dict_metadata": {}})), marker, f"{CORRUPT} (it holds a dict)"
    )
    _refused(_crafted(tmp_path, pickle.dumps(torch.Size([1]))), marker, f"{CORRUPT} (it holds a Size)")
    empty = _pickle(_global(METADATA_MODULE, "Metadata", 4) + pickle.EMPTY_TUPLE + pickle.NEWOBJ, 4)
    _refused(_crafted(tmp_path, empty), marker, f"{CORRUPT} (no tensor table)")
    (tmp_path / "crafted" / store.DCP_METADATA).unlink()
    _refused(tmp_path / "crafted", marker, "missing (not a complete checkpoint)")


# ---- real checkpoints still read ------------------------------------------------------------------


def _globals_in(data: bytes) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            seen.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()  # a file this test just wrote with dcp.save
    return seen


def test_the_allow_list_is_exactly_what_dcp_writes(checkpoint: Path) -> None:
    seen = _globals_in((checkpoint / store.DCP_METADATA).read_bytes())
    assert seen <= set(ALLOWED)
    constants = torch.dtype | torch.layout | torch.memory_format
    assert all(
        module == "torch" and "." not in name
        for (module, name), v in ALLOWED.items()
        if isinstance(v, constants)
    )
    classes = (Metadata, TensorStorageMetadata, ChunkStorageMetadata, TensorProperties, _MEM_FORMAT_ENCODING,
               MetadataIndex, StorageMeta, _StorageInfo)  # fmt: skip
    others = {key for key, value in ALLOWED.items() if not isinstance(value, constants)}
    assert others == {(c.__module__, c.__qualname__) for c in classes} | {
        ("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
        ("pathlib._local", "PosixPath"),
    }  # fmt: skip
    # Nothing spare: a real save uses every entry but the other Python's spelling of PosixPath.
    assert len(others - seen) == 1 and others - seen <= {
        ("pathlib", "PosixPath"),
        ("pathlib._local", "PosixPath"),
    }


@pytest.mark.parametrize("protocol", REAL_PROTOCOLS)
def test_a_real_checkpoint_reads_under_every_protocol_dcp_can_write(checkpoint: Path, protocol: int) -> None:
    """DCP pickles with the default protocol (4; 5 from Python 3.14); 2 and 3 read too."""
    file = checkpoint / store.DCP_METADATA
    with file.open("rb") as f:
        expected = pickle.load(f)  # the reference: a file this test just wrote with dcp.save
    file.write_bytes(pickle.dumps(expected, protocol=protocol))
    metadata = SafeReader(checkpoint).read_metadata()
    assert metadata.state_dict_metadata == expected.state_dict_metadata
    assert metadata.storage_data == expected.storage_data
    infos = store.tensors(checkpoint, "model.")
    assert infos["w"].shape == (4, 3) and infos["half"].dtype == torch.bfloat16
    assert infos["index"].shape == (2, 2) and store.tensors(checkpoint)["optim.step"].shape == ()


@pytest.mark.parametrize("protocol", [0, 1])
def test_protocols_0_and_1_need_copyreg_and_are_refused(
    checkpoint: Path, marker: Path, protocol: int
) -> None:
    """Dataclasses pickle through copyreg._reconstructor there; DCP never writes these protocols."""
    file = checkpoint / store.DCP_METADATA
    with file.open("rb") as f:
        expected = pickle.load(f)  # a file this test just wrote with dcp.save
    file.write_bytes(pickle.dumps(expected, protocol=protocol))
    _refused(checkpoint, marker, "copy_reg._reconstructor")


def test_dcp_loads_tensors_through_the_safe_reader(checkpoint: Path) -> None:
    state = {"model.w": torch.zeros(4, 3), "rng.0.cpu": torch.zeros_like(torch.get_rng_state())}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=SafeReader(checkpoint), no_dist=True)
    assert state["model.w"].abs().sum() > 0 and state["rng.0.cpu"].abs().sum() > 0


# ---- the CLI and the check before launch ---------------------------------------------------------


@pytest.fixture
def crafted_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """A complete mpcli checkpoint whose .metadata runs a command if unpickled unrestricted."""
    path = write_checkpoint(tiny_model(), tmp_path / "run" / store.CHECKPOINTS, 2)
    body = _call(_global(METADATA_MODULE, "os.system", 4), _text(_touch_command(marker), 4))
    (path / store.DCP_METADATA).write_bytes(_pickle(body, 4))
    return path


def _one_error_line(result: Any, file: Path) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(file) in " ".join(result.stderr.split()) and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_cli_refuses_a_crafted_checkpoint_in_one_line(
    crafted_checkpoint: Path, marker: Path, tmp_path: Path, command: str
) -> None:
    extra = ["--out", str(tmp_path / "x.safetensors")] if command == "export" else []
    result = CliRunner().invoke(app, ["checkpoint", command, str(crafted_checkpoint), *extra])
    line = _one_error_line(result, crafted_checkpoint / store.DCP_METADATA)
    assert "refused" in line and "os.system" in line
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_cli_reports_a_truncated_checkpoint_in_one_line(crafted_checkpoint: Path) -> None:
    (crafted_checkpoint / store.DCP_METADATA).write_bytes(b"\x80\x04\x95")
    result = CliRunner().invoke(app, ["checkpoint", "inspect", str(crafted_checkpoint.parent.parent)])
    assert "truncated or corrupt" in _one_error_line(result, crafted_checkpoint / store.DCP_METADATA)


@pytest.mark.parametrize("command", ["inspect", "list"])
def test_cli_reports_a_corrupt_meta_json_in_one_line(crafted_checkpoint: Path, command: str) -> None:
    (crafted_checkpoint / store.META).write_text('{"step": ')
    result = CliRunner().invoke(app, ["checkpoint", command, str(crafted_checkpoint.parent.parent)])
    assert "not a readable mpcli checkpoint description" in _one_error_line(
        result, crafted_checkpoint / store.META
    )


def test_resume_from_a_crafted_checkpoint_fails_before_launch(
    crafted_checkpoint: Path, marker: Path, tiny: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UnsafeCheckpoint, match="refused: it names"):
        validate(tiny(f"checkpoint.resume={crafted_checkpoint}"), cuda_devices=0)
    launches: list[Any] = []
    monkeypatch.setattr("mpcli.cli.train.launch", lambda *args, **kwargs: launches.append(args))
    monkeypatch.setattr("mpcli.cli.common.cuda_device_count", lambda: 0)
    args = ["train", "conf=gpt2-pipeline", "model=gpt2-tiny", f"checkpoint.resume={crafted_checkpoint}",
            f"--run-dir={crafted_checkpoint.parent.parent}"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    _one_error_line(result, crafted_checkpoint / store.DCP_METADATA)
    assert not launches and not marker.exists()


def test_auto_resume_into_a_run_holding_a_crafted_checkpoint_fails_before_launch(
    crafted_checkpoint: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`checkpoint.resume=auto` (the default) in a run directory someone handed over."""
    launches: list[Any] = []
    monkeypatch.setattr("mpcli.cli.train.launch", lambda *args, **kwargs: launches.append(args))
    monkeypatch.setattr("mpcli.cli.common.cuda_device_count", lambda: 0)
    run_dir = crafted_checkpoint.parent.parent
    args = ["train", "conf=gpt2-pipeline", "model=gpt2-tiny", "topology.device=cpu", f"--run-dir={run_dir}"]
    result = CliRunner().invoke(app, args)
    assert "refused" in _one_error_line(result, crafted_checkpoint / store.DCP_METADATA)
    assert not launches and not marker.exists()
