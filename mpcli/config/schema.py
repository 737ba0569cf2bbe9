"""Typed schema of a run: the only place where config defaults live.

Hydra composes YAML over these dataclasses (registered in the ConfigStore), so unknown keys and wrong
types fail at compose time; `OmegaConf.to_object` then turns the result into a `RunConfig` once and
library code only ever sees these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULES = ("gpipe", "1f1b")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("adamw", "sgd")
DATASETS = ("bytes-corpus", "tokens")
MODEL_FAMILIES = ("gpt2",)


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


@dataclass
class ParallelConfig:
    pp: int = 1
    # Data-parallel replicas (FSDP2 over the "dp" mesh axis).
    dp: int = 1
    schedule: str = "1f1b"
    microbatches: int = 4
    # Blocks per pipeline stage, e.g. [5, 7] for 12 blocks on pp=2; null = even split.
    split: list[int] | None = None


@dataclass
class TopologyConfig:
    device: str = "auto"
    # Processes on this node; null = pp * tp * dp / nnodes.
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    # host:port of the c10d rendezvous; null = a free port on 127.0.0.1 (single node only).
    rdzv_endpoint: str | None = None
    # Job id shared by all nodes of one job; null = a fresh id (1 node) or the run name (several nodes).
    rdzv_id: str | None = None
    max_restarts: int = 0
    # Collective timeout; gloo's own default is 30 minutes, far too long to notice a hang.
    timeout_s: int = 600
    # CPU threads per worker; null = cores on this node / local workers.
    threads_per_worker: int | None = None


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


@dataclass
class DataConfig:
    name: str = "bytes-corpus"
    # Token file (uint16) for name=tokens.
    path: str | None = None
    eval_fraction: float = 0.05
    # Size cap of the embedded byte corpus.
    corpus_bytes: int = 4_000_000


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
