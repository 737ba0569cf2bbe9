"""Typed schema of a run: the only place where config defaults live.

Hydra composes YAML over these dataclasses (registered in the ConfigStore), so unknown keys and wrong
types fail at compose time; `OmegaConf.to_object` then turns the result into a `RunConfig` once and
library code only ever sees these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BALANCE_MODES = ("uniform", "params", "flops", "time")
TP_STYLES = ("colwise", "rowwise", "embedding", "head", "sequence_parallel", "gather_sequence")
DEVICES = ("auto", "cpu", "cuda")
NUMA_BINDINGS = ("node", "socket", "exclusive", "core-complex")  # torch.numa.binding.AffinityMode
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("adamw", "sgd")
ACTIVATION_CHECKPOINTING = ("none", "full", "selective")
COMPILE_SCOPES = ("auto", "block", "stage")
DATASETS = ("bytes-corpus", "tokens", "shapes", "synthetic")


@dataclass
class ModelConfig:
    family: str = "gpt2"
    size: str = "tiny"
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    seq_len: int = 128
    vocab: int = 256
    dropout: float = 0.0
    tie_embeddings: bool = True
    # llama: key/value heads (grouped-query attention; null = n_head), SwiGLU width (null = 8/3 d_model
    # rounded up to a multiple of 256), rotary base, RMSNorm epsilon.
    n_kv_head: int | None = None
    ffn_hidden: int | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # mlp / cnn: classes of the classification task; mlp: input features; cnn: image side and width.
    n_classes: int = 10
    in_features: int = 32
    image_size: int = 32
    channels: int = 32
    # Bring your own (family=custom): a factory `pkg.module.fn` returning an nn.Module, its keyword
    # arguments, and the ordered submodule paths that, applied one after another, compute forward.
    _target_: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    # custom: cross_entropy (classification over the last dim) or mse.
    loss: str = "cross_entropy"

    @property
    def n_blocks(self) -> int:
        """Blocks a pipeline split may cut between: the listed submodules of a bring-your-own model,
        else the layers."""
        return len(self.blocks) if self.blocks else self.n_layer

    # Start from these weights (safetensors: an `mpcli checkpoint export`, or GPT-2 in the Hugging
    # Face layout) instead of a fresh init; ignored when a checkpoint is resumed.
    init_from: str | None = None


@dataclass
class ParallelConfig:
    pp: int = 1
    # Tensor-parallel degree (DTensor over the innermost "tp" mesh axis).
    tp: int = 1
    # Data-parallel replicas (FSDP2 over the "dp" mesh axis).
    dp: int = 1
    # A pipeline schedule named in mpcli/parallel/schedules.py (the table that validation reads).
    schedule: str = "1f1b"
    microbatches: int = 4
    # Stages per rank for the multi-stage schedules (V-shaped ones need exactly 2).
    virtual_stages: int = 1
    # Blocks per pipeline stage, e.g. [5, 7] for 12 blocks on pp=2; null = balanced by `balance`.
    split: list[int] | None = None
    balance: str = "uniform"
    # Shard activations along the sequence between tensor-parallel regions (GPT-2).
    sequence_parallel: bool = False
    # Keep the vocabulary-sharded logits sharded through the loss (GPT-2, tp > 1).
    loss_parallel: bool = True
    # Overlap each sequence-parallel all-gather / reduce-scatter with the matmul beside it (torch's
    # micro-pipelined "async" TP: Inductor splits both into chunks over symmetric memory). CUDA,
    # compiled, sequence_parallel=true only.
    async_tp: bool = False
    # Extra tensor-parallel plan entries: module-name pattern -> style (see TP_STYLES).
    tp_plan: dict[str, str] = field(default_factory=dict)


@dataclass
class TopologyConfig:
    device: str = "auto"
    # Processes on this node; null = pp * tp * dp / nnodes.
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    # host:port of the c10d rendezvous; null = a free port on 127.0.0.1 (single node only).
    rdzv_endpoint: str | None = None
    # Address every listener binds to; null = loopback (1 node) or the one routing to rdzv_endpoint.
    bind_host: str | None = None
    # Job id shared by all nodes of one job; null = a fresh id (1 node) or the run name (several nodes).
    rdzv_id: str | None = None
    max_restarts: int = 0
    # Collective timeout; gloo's own default is 30 minutes, far too long to notice a hang.
    timeout_s: int = 600
    # CPU threads per worker; null = cores on this node / local workers.
    threads_per_worker: int | None = None
    # Pin each GPU worker to CPUs near its GPU (torchrun --numa-binding): node, socket, exclusive or
    # core-complex; null = no pinning.
    numa_binding: str | None = None


@dataclass
class TrainConfig:
    steps: int = 100
    microbatch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "auto"
    seed: int = 1234
    log_every: int = 1
    eval_every: int = 50
    eval_batches: int = 4
    # Peak dense bf16 TFLOP/s per device for MFU; null = look the GPU up in a table.
    peak_tflops: float | None = None
    # torch.compile (in place: parameter names stay); null = on for CUDA, off on CPU (slow to start).
    compile: bool | None = None
    # AdamW's fused kernel (one launch updates every parameter); null = on for CUDA, off on CPU.
    fused_optimizer: bool | None = None
    # What one compiled graph covers: block (each block alone; works with tensor and data parallel),
    # stage (a stage's whole forward: fewer graph calls, fusion across blocks; tp=1 and dp=1 only),
    # or auto (stage where allowed, else block).
    compile_scope: str = "auto"
    # Recompute block activations in backward: none, full (every block), selective (every other block).
    activation_checkpointing: str = "none"
    # Steps whose per-rank forward/backward times go to run_dir/timeline/ (for `mpcli report`),
    # recorded after one warm-up step; 0 = off.
    timeline_steps: int = 3


@dataclass
class DataConfig:
    name: str = "bytes-corpus"
    # Token file (uint16) for name=tokens.
    path: str | None = None
    eval_fraction: float = 0.05
    # Size cap of the embedded byte corpus.
    corpus_bytes: int = 4_000_000
    # Items in the generated train sets (shapes, synthetic); eval holds eval_fraction of that.
    size: int = 50_000


@dataclass
class CheckpointConfig:
    # Where checkpoints go; null = <run dir>/checkpoints.
    dir: str | None = None
    # Save every N steps and at the last step; 0 = never save.
    every: int = 500
    # Keep the newest K checkpoints (older ones are deleted once a newer one is complete).
    keep: int = 3
    # auto = continue this run directory's latest checkpoint (fresh start when there is none);
    # never = always start fresh; or a PATH (a checkpoint, a checkpoints dir or a run dir).
    resume: str = "auto"
    # Write in a background thread while training goes on (`async` is a Python keyword).
    async_save: bool = False


@dataclass
class RunConfig:
    name: str = "run"
    # Runs go to <run_root>/<name>/<timestamp>/.
    run_root: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
