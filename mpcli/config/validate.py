"""Semantic checks of a composed `RunConfig`, all before any process starts.

Each failure is a `ConfigError` whose message names the key and the fix in one line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mpcli.config import schema
from mpcli.config.layout_checks import check_model, check_parallel
from mpcli.config.layout_checks import one_of as _one_of
from mpcli.config.layout_checks import positive as _positive
from mpcli.config.schema import RunConfig
from mpcli.config.target import resolve_target
from mpcli.data.token_file import token_file_layout
from mpcli.errors import ConfigError


def resolve_device(device: str, cuda_devices: int) -> str:
    """`auto` means cuda when a GPU is present."""
    if device == "auto":
        return "cuda" if cuda_devices > 0 else "cpu"
    return device


def bf16_enabled(precision: str, device_type: str) -> bool:
    """`auto` means bf16 autocast on CUDA and float32 elsewhere."""
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


def on_for_cuda(setting: bool | None, device_type: str) -> bool:
    """A speed switch whose `null` means on for CUDA, off elsewhere (train.compile, train.fused_optimizer)."""
    return setting if setting is not None else device_type == "cuda"


def _check_topology(run: RunConfig, cuda_devices: int) -> None:
    t = run.topology
    _one_of("topology.device", t.device, schema.DEVICES)
    _positive("topology.nnodes", t.nnodes)
    _positive("topology.timeout_s", t.timeout_s)
    _positive("topology.max_restarts", t.max_restarts, zero_ok=True)
    if t.device == "cuda" and cuda_devices == 0:
        raise ConfigError("topology.device=cuda: no CUDA device is visible; use topology.device=cpu")
    world = run.parallel.pp * run.parallel.dp * run.parallel.tp
    if world % t.nnodes:
        raise ConfigError(
            f"topology.nnodes={t.nnodes}: pp x dp x tp = {world} processes do not divide evenly "
            "over the nodes"
        )
    per_node = world // t.nnodes
    if t.nproc_per_node is not None and t.nproc_per_node != per_node:
        raise ConfigError(
            f"topology.nproc_per_node={t.nproc_per_node}: pp x dp x tp / nnodes = {per_node}; "
            "change the degrees or drop nproc_per_node"
        )
    if resolve_device(t.device, cuda_devices) == "cuda" and per_node > cuda_devices:
        fits = nearest_fitting_layout(run, cuda_devices)
        offer = f"the nearest layout that fits: {fits}" if fits else "lower parallel.pp/dp/tp"
        raise ConfigError(
            f"parallel: pp x dp x tp = {world} needs {per_node} GPUs per node but {cuda_devices} are "
            f"visible; {offer} (or topology.device=cpu)"
        )
    if not 0 <= t.node_rank < t.nnodes:
        raise ConfigError(f"topology.node_rank={t.node_rank}: must be in [0, nnodes={t.nnodes})")
    if t.nnodes > 1 and not t.rdzv_endpoint:
        raise ConfigError("topology.rdzv_endpoint: required when nnodes > 1 (host:port of node 0)")
    if t.rdzv_endpoint and not t.rdzv_endpoint.rpartition(":")[2].isdigit():
        raise ConfigError(f"topology.rdzv_endpoint={t.rdzv_endpoint}: expected host:port")
    if t.threads_per_worker is not None:
        _positive("topology.threads_per_worker", t.threads_per_worker)
    if t.numa_binding is not None:
        _one_of("topology.numa_binding", t.numa_binding, schema.NUMA_BINDINGS)
        if resolve_device(t.device, cuda_devices) != "cuda":
            raise ConfigError(
                f"topology.numa_binding={t.numa_binding}: pins workers to the CPUs near their GPU, but this "
                "run uses no GPU; drop it (topology.numa_binding=null)"
            )


def nearest_fitting_layout(run: RunConfig, cuda_devices: int) -> str | None:
    """The overrides of the layout closest to `run`'s that fits `cuda_devices` GPUs a node and passes the
    layout checks: the most GPUs used, then the largest tp (its memory saving), then the largest pp."""
    p, nodes = run.parallel, run.topology.nnodes
    candidates = sorted(
        (
            (pp * dp * tp, tp, pp, dp)
            for pp in range(1, p.pp + 1)
            for dp in range(1, p.dp + 1)
            for tp in range(1, p.tp + 1)
            if (pp * dp * tp) % nodes == 0 and pp * dp * tp // nodes <= cuda_devices
        ),
        reverse=True,
    )
    for _, tp, pp, dp in candidates:
        layout = replace(p, pp=pp, dp=dp, tp=tp, split=None)
        if pp == 1:
            layout = replace(layout, virtual_stages=1, schedule="1f1b")
        try:
            check_parallel(replace(run, parallel=layout))
        except ConfigError:
            continue
        changed = {key: getattr(layout, key) for key in ("pp", "dp", "tp", "virtual_stages", "schedule")}
        return " ".join(f"parallel.{k}={v}" for k, v in changed.items() if v != getattr(p, k))
    return None


def _check_async_tp(run: RunConfig, cuda_devices: int) -> None:
    """Async TP rewrites compiled CUDA graphs around the sequence-parallel collectives: without any of
    the four it would silently do nothing."""
    p = run.parallel
    if not p.async_tp:
        return
    needs = [
        (p.tp > 1, "parallel.tp > 1"),
        (p.sequence_parallel, "parallel.sequence_parallel=true (its collectives are what it overlaps)"),
        (resolve_device(run.topology.device, cuda_devices) == "cuda", "a CUDA device"),
        (run.train.compile is not False, "train.compile (Inductor does the overlap)"),
    ]
    for met, need in needs:
        if not met:
            raise ConfigError(f"parallel.async_tp=true needs {need}; set it or drop parallel.async_tp")


def _check_train(run: RunConfig) -> None:
    t = run.train
    for key in ("steps", "microbatch_size", "log_every", "eval_batches"):
        _positive(f"train.{key}", getattr(t, key))
    for key in ("lr", "warmup", "weight_decay", "grad_clip", "eval_every"):
        _positive(f"train.{key}", getattr(t, key), zero_ok=True)
    _one_of("train.optimizer", t.optimizer, schema.OPTIMIZERS)
    _one_of("train.precision", t.precision, schema.PRECISIONS)
    _one_of("train.activation_checkpointing", t.activation_checkpointing, schema.ACTIVATION_CHECKPOINTING)
    _one_of("train.compile_scope", t.compile_scope, schema.COMPILE_SCOPES)
    if t.compile_scope == "stage" and (run.parallel.tp > 1 or run.parallel.dp > 1):
        raise ConfigError(
            "train.compile_scope=stage needs parallel.tp=1 and parallel.dp=1 "
            "(sharded stages compile per block): use train.compile_scope=block"
        )
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio={t.min_lr_ratio}: must be in [0, 1]")
    if t.peak_tflops is not None:
        _positive("train.peak_tflops", t.peak_tflops)


def _check_data(run: RunConfig) -> None:
    d = run.data
    _one_of("data.name", d.name, schema.DATASETS)
    _positive("data.size", d.size)
    if not 0 < d.eval_fraction < 0.5:
        raise ConfigError(f"data.eval_fraction={d.eval_fraction}: must be in (0, 0.5)")
    if d.name == "bytes-corpus" and run.model.vocab < 256:
        raise ConfigError(f"model.vocab={run.model.vocab}: the byte corpus needs vocab >= 256")
    if d.name == "tokens":
        if not d.path:
            raise ConfigError("data.path: required for data.name=tokens (a uint16 token file)")
        path = Path(d.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.path={d.path}: file not found")
        held_out = int(token_file_layout(path, f"data.path={d.path}").count * d.eval_fraction)
        if held_out <= run.model.seq_len:
            raise ConfigError(
                f"data.path={d.path}: too few tokens; its held-out part needs more than "
                f"model.seq_len={run.model.seq_len} tokens"
            )
    _positive("data.corpus_bytes", d.corpus_bytes)


def _check_checkpoint(run: RunConfig, user_code: bool) -> None:
    c = run.checkpoint
    _positive("checkpoint.every", c.every, zero_ok=True)
    _positive("checkpoint.keep", c.keep, zero_ok=True)
    if c.resume not in ("auto", "never"):
        from mpcli.checkpoint import store, weights  # torch: only when there is a file to check

        found = store.resolve(Path(c.resume).expanduser())
        if found is None:
            raise ConfigError(
                f"checkpoint.resume={c.resume}: no complete checkpoint there; give a checkpoint, "
                "checkpoints or run directory, or auto / never"
            )
        from mpcli.models import family_spec

        if user_code or not family_spec(run.model.family).user_code:  # its shapes need its code
            weights.check_checkpoint(found, run.model, source=f"checkpoint.resume={c.resume}")
    if run.model.init_from:
        from mpcli.checkpoint import weights

        weights.check_init_from(run.model)


def check_auto_resume(run: RunConfig, run_dir: Path) -> None:
    """Before launch: the checkpoint that `checkpoint.resume=auto` would continue in `run_dir` (when it
    holds one) is readable and holds this model's shapes, so a refused one is one line, not a crash."""
    from mpcli.checkpoint import store, weights

    root = store.checkpoint_root(run.checkpoint, run_dir)
    found = store.latest(root) if run.checkpoint.resume == "auto" and root.is_dir() else None
    if found is not None:
        weights.check_checkpoint(found, run.model, source=f"checkpoint.resume=auto ({found})")


def _builds_user_code(run: RunConfig) -> bool:
    from mpcli.models import family_spec  # torch: only when a config is checked

    return family_spec(run.model.family).user_code


def _check_custom_model(run: RunConfig) -> None:
    """Resolve the target (imports its module, calls nothing), then build it on the meta device so that
    wrong `model.kwargs` or `model.blocks` are one line here instead of a crash in every worker."""
    target = f"model._target_={run.model._target_}"
    resolve_target(str(run.model._target_))
    from mpcli.models import build_model

    try:
        build_model(run.model)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{target}: building it with model.kwargs failed: {type(exc).__name__}: {exc}"
        ) from None


def validate(run: RunConfig, *, cuda_devices: int, user_code: bool = True) -> None:
    """Raise `ConfigError` for the first problem found; `cuda_devices` is what this node sees.

    `user_code=False` (read-only commands) never imports a custom model's module: its target is then
    checked for form only, and a checkpoint's shapes are not compared with that model.
    """
    check_model(run)
    check_parallel(run)
    _check_topology(run, cuda_devices)
    _check_async_tp(run, cuda_devices)
    _check_train(run)
    _check_data(run)
    if user_code and _builds_user_code(run):
        _check_custom_model(run)
    _check_checkpoint(run, user_code)
