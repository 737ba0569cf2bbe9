"""mpcli's benchmarks behind one driver: `python bench/run.py SUBCOMMAND ...`, from the repository root.

    reference         the plain single-GPU GPT-2 step, written without mpcli (one JSON line)
    reference-llama   the same for a Llama-style model (bench/reference_llama.py's options)
    compare           that reference next to mpcli layouts of the same model, one table row per run
    matrix            every model size and layout of docs/performance.md on one 4-GPU machine
    one-rank          rank 0 of a tensor/data-parallel layout alone on one GPU, its collectives faked
    profile           torch.profiler over 3 steps of one layout (every rank's trace with --trace)
    probe             profile with traces, then trace-summary of every rank
    trace-summary     where each rank's GPU and host time went, from profiler traces
    fit-step-model    fit `mpcli plan`'s step-time constants to bench/measured_steps.csv (no GPU)
    plan-vs-measured  `mpcli plan`'s peak-memory estimate next to the measured peak
    layouts           eager runs of the tensor, hybrid, pipeline, CNN and MLP recipes on 4 GPUs
    smoke             gpt2-small, eager: pp2 on 2 GPUs, pp1 on one, pp1 x dp2 on 2
    nccl-bandwidth    all-gather, reduce-scatter and all-reduce bandwidth between this machine's GPUs

`python bench/run.py SUBCOMMAND --help` lists each one's options; bench/README.md says what each
measures and how to read it. Subcommands that start mpcli runs run them as `python -m mpcli train`
with this interpreter, so mpcli must be importable (`pip install -e .`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is imported as a namespace package from the repository root
    sys.path.insert(0, str(ROOT))
DRIVER = Path(__file__).resolve()

# GPT-2's sizes as (layers, heads, d_model), for the reference and for which layouts the heads allow.
SHAPES = {"medium": (24, 16, 1024), "large": (36, 20, 1280), "xl": (48, 25, 1600)}

# The layouts `compare` knows by name: the fastest measured per GPU count (docs/performance.md). Each
# stage pass, block pass and tensor-parallel collective costs a fixed amount of host time, so these use
# large microbatches; tp2 at 48 fits an 80 GB card. pp4 at 32 x 16 is the step model's pick over the
# measured 16 x 16 (same memory, half the bubble). pp4mem is the least-memory layout: smaller
# microbatches, interleaved. tp2async is tp2 with torch's micro-pipelined tensor parallelism.
NAMED = {
    "none": "parallel.pp=1 parallel.microbatches=1 train.microbatch_size=16",
    "pp2": "parallel.pp=2 parallel.microbatches=16 train.microbatch_size=16 parallel.balance=flops",
    "pp4": "parallel.pp=4 parallel.microbatches=32 train.microbatch_size=16 parallel.balance=flops",
    "pp4mem": "parallel.pp=4 parallel.schedule=interleaved-1f1b parallel.virtual_stages=2 "
    "parallel.microbatches=16 train.microbatch_size=4 parallel.balance=flops",
    "tp2": "parallel=tensor train.microbatch_size=48",
    "tp2async": "parallel=tensor train.microbatch_size=48 parallel.async_tp=true",
    "pp2tp2": "parallel=hybrid parallel.microbatches=8 train.microbatch_size=32 parallel.balance=flops",
    "recipe": "",
}
Handler = Callable[[argparse.Namespace], None]
ENV_WORD = re.compile(r"^[A-Z_][A-Z0-9_]*=")  # a variant's word that sets the environment of its run
TABLE_HEADER = (
    "| run | tok/s per GPU | MFU | peak GiB / GPU | ratio | steps, wall | reference |\n"
    "|---|---|---|---|---|---|---|"
)
# What `compare` passes every mpcli run: no evaluation, timeline or checkpoints inside the timed steps.
COMPARE_FIXED = ["train.eval_every=0", "train.timeline_steps=0", "checkpoint.every=0", "train.compile=true"]
PLAN_FIXED = ["train.steps=5", "train.eval_every=0", "train.timeline_steps=0", "checkpoint=none"]
PLAN_FIXED.append("train.compile=false")  # eager: `mpcli plan`'s activation model describes eager autograd
# plan-vs-measured's layouts: name, world size, overrides (conf first). "suggested" is replaced by the
# top layout of `mpcli plan --suggest --gpus 4 --gpu-mem 80 conf=gpt2-pipeline model=gpt2-xl`.
PLAN_LAYOUTS = [
    ("small-pp1-m8", 1, "conf=gpt2-pipeline parallel.pp=1 parallel.microbatches=8"),
    ("small-pp2-1f1b", 2, "conf=gpt2-pipeline"),
    ("small-pp2-gpipe", 2, "conf=gpt2-pipeline parallel.schedule=gpipe"),
    ("small-pp2-interleave", 2, "conf=gpt2-pipeline parallel.schedule=interleaved-1f1b "
     "parallel.virtual_stages=2"),
    ("small-pp2-zbv", 2, "conf=gpt2-pipeline parallel.schedule=zbv parallel.virtual_stages=2"),
    ("small-dp2-fsdp", 2, "conf=gpt2-pipeline parallel.pp=1 parallel.dp=2 parallel.microbatches=4"),
    ("small-pp2-tp2-sp", 4, "conf=gpt2-hybrid"),
    ("medium-pp4-1f1b", 4, "conf=gpt2-pipeline model=gpt2-medium parallel.pp=4"),
    ("xl-suggested-top", 4, "conf=gpt2-pipeline model=gpt2-xl suggested"),
    ("xl-pp4-zbv", 4, "conf=gpt2-pipeline model=gpt2-xl parallel.pp=4 parallel.schedule=zbv "
     "parallel.virtual_stages=2 parallel.microbatches=8"),
]  # fmt: skip
EAGER_LAYOUTS_COMMON = ["train.steps=40", "train.eval_every=20", "train.compile=false"]
EAGER_LAYOUTS = [  # `layouts`: name, overrides
    ("tp2", ["conf=gpt2-tensor", *EAGER_LAYOUTS_COMMON]),
    ("pp2tp2", ["conf=gpt2-hybrid", *EAGER_LAYOUTS_COMMON]),
    ("dp2tp2", ["conf=gpt2-hybrid", "parallel.pp=1", "parallel.dp=2", "parallel.microbatches=4",
                *EAGER_LAYOUTS_COMMON]),
    ("pp4-i", ["conf=gpt2-pipeline", "parallel.pp=2", "parallel.dp=2", "parallel.schedule=interleaved-1f1b",
               "parallel.virtual_stages=2", *EAGER_LAYOUTS_COMMON]),
    ("pp2-zbv", ["conf=gpt2-pipeline", "parallel.schedule=zbv", "parallel.virtual_stages=2", "parallel.dp=2",
                 *EAGER_LAYOUTS_COMMON]),
    ("cnn", ["conf=cnn-pipeline", "train.steps=100", "train.eval_every=50"]),
    ("mlp", ["conf=mlp-tensor", "train.steps=100", "train.eval_every=50"]),
]  # fmt: skip
SMOKE_LAYOUTS = [  # `smoke`: name, overrides on top of gpt2-pipeline for 50 eager steps
    ("pp2", ["parallel.pp=2"]),
    ("pp1", ["parallel.pp=1", "parallel.microbatches=8"]),
    ("dp2", ["parallel.pp=1", "parallel.dp=2", "parallel.microbatches=4"]),
]


# --- helpers -----------------------------------------------------------------------------------------


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def mpcli_train(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "mpcli", "train", *overrides]


def driver(*args: object) -> list[str]:
    """This driver as a command of its own (a subcommand in a fresh process)."""
    return [sys.executable, str(DRIVER), *map(str, args)]


def run_logged(
    cmd: Sequence[str], log: Path, *, timeout: float | None = None, env: dict | None = None
) -> int | None:
    """Run `cmd` with its output in `log`. Past `timeout` seconds it gets SIGTERM (as timeout(1) sends), 30 s
    later its whole process group (mpcli's workers included) SIGKILL. The exit status; None when cut off."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, process_group=0)
        try:
            return proc.wait(timeout=timeout)
        except BaseException as error:  # cut off, or interrupted (Ctrl-C)
            cut_off = isinstance(error, subprocess.TimeoutExpired)
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30 if cut_off else 5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of its group: a killed launcher's workers
            proc.wait()
            if cut_off:
                return None
            raise


def tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table_row(ref: dict | None, records: list[dict], name: str, warmup: int, wall: float) -> str:
    """One run against the reference: means over the steps after `warmup` (a run cut off early reports
    the steps it finished). `ref` None: no single-GPU reference (a model that does not fit one GPU)."""
    steps = [r for r in records if "loss" in r][warmup:]
    if not steps:
        return f"| {name} | no steps after warm-up | | | | {wall:.0f} s | |"
    per_gpu = sum(r["tokens_per_s_per_device"] for r in steps) / len(steps)
    mfus = [r["mfu"] for r in steps if r.get("mfu") is not None]  # none on CPU
    mfu = f"{100 * sum(mfus) / len(mfus):.1f}%" if mfus else "-"
    memories = [r["max_mem_gb"] for r in steps if r.get("max_mem_gb") is not None]
    memory = f"{max(memories):.1f}" if memories else "-"
    if ref is None:
        ratio, reference = "-", "no single-GPU reference"
    else:
        ratio = f"{per_gpu / ref['tokens_per_s']:.2f}x"
        tokens, ref_mfu, ref_memory = ref["tokens_per_s"], 100 * ref["mfu"], ref["max_mem_gb"]
        reference = f"ref {tokens:,.0f} tok/s, {ref_mfu:.1f}%, {ref_memory:.1f} GiB"
    return (
        f"| {name} | {per_gpu:,.0f} | {mfu} | {memory} | {ratio} "
        f"| {len(steps)} steps, {wall:.0f} s | {reference} |"
    )


def append_row(table: Path, row: str) -> None:
    print(row, flush=True)
    with table.open("a") as f:
        if f.tell() == 0:
            f.write(TABLE_HEADER + "\n")
        f.write(row + "\n")


def merge_tables(parts: Sequence[Path], into: Path) -> None:
    """The rows of `parts` under one header (parts that do not exist are skipped)."""
    rows = [
        line
        for part in parts
        if part.is_file()
        for line in part.read_text().splitlines()
        if line and line not in TABLE_HEADER.splitlines()
    ]
    into.write_text("\n".join([TABLE_HEADER, *rows]) + "\n")


def split_variant(variant: str) -> tuple[dict[str, str], list[str]]:
    """Named layouts and overrides, with environment words (`NCCL_PROTO=Simple tp2 parallel.async_tp=true`):
    (environment, overrides), each name replaced by its overrides."""
    words = [word for item in variant.split() for word in NAMED.get(item, item).split()]
    env = dict(word.split("=", 1) for word in words if ENV_WORD.match(word))
    return env, [word for word in words if not ENV_WORD.match(word)]


def default_variants(heads: int, gpus: int) -> list[str]:
    """Every named layout this many GPUs and this many heads allow (tp needs heads divisible by 2)."""
    variants = ["none"]
    if gpus >= 2:
        variants += ["pp2"] + (["tp2"] if heads % 2 == 0 else [])
    if gpus >= 4:
        variants += ["pp4", "pp4mem"] + (["pp2tp2"] if heads % 2 == 0 else [])
    return variants


def torch_banner() -> None:
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print("torch", torch.__version__, name, torch.cuda.device_count(), "GPUs", flush=True)


# --- reference, compare, matrix ----------------------------------------------------------------------


def cmd_reference(a: argparse.Namespace) -> None:
    from bench import reference_gpt2

    layers, heads, dim = SHAPES[a.model]
    shape = {"layers": a.layers or layers, "heads": a.heads or heads, "dim": a.dim or dim}
    result = reference_gpt2.measure(
        **shape,
        batch=a.batch,
        seq=a.seq,
        vocab=a.vocab,
        steps=a.steps,
        warmup=a.warmup,
        peak_tflops=a.peak_tflops,
    )
    print(json.dumps(result), flush=True)


def cmd_reference_llama(a: argparse.Namespace) -> None:
    from bench import reference_llama

    sys.argv = ["python bench/run.py reference-llama", *a.passthrough]  # its own options, parsed there
    reference_llama.main()


def measure_reference(size: str, out: Path, *, steps: int, warmup: int, ref_dir: Path | None) -> dict | None:
    """The reference for gpt2-`size`, as OUT/ref_SIZE.json: copied from `ref_dir` when measured there
    before on this machine, else measured now (batch 16). None when it failed."""
    path = out / f"ref_{size}.json"
    cached = ref_dir / path.name if ref_dir else None
    if cached is not None and cached.is_file() and cached.stat().st_size:
        shutil.copy(cached, path)
    else:
        layers, heads, dim = SHAPES[size]
        shape = ["--layers", layers, "--heads", heads, "--dim", dim, "--batch", 16]
        done = subprocess.run(
            driver("reference", *shape, "--steps", steps, "--warmup", warmup),
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"reference gpt2-{size} failed", flush=True)
            return None
        path.write_text(lines[-1] + "\n")
    print(f"reference gpt2-{size}: {path.read_text().strip()}", flush=True)
    return json.loads(path.read_text())


def next_run_dir(out: Path) -> Path:
    """OUT/runN for the lowest N not used yet (OUT may hold the runs of an earlier compare)."""
    i = 1
    while (out / f"run{i}").exists() or (out / f"run{i}.log").exists():
        i += 1
    return out / f"run{i}"


def compare_size(out: Path, size: str, variants: list[str], *, gpus: int, a: argparse.Namespace) -> None:
    """gpt2-SIZE's reference, then each variant as an mpcli run; SIZE may instead name a recipe (its own
    model and layout, "recipe"), which has no single-GPU reference."""
    if size in SHAPES:
        conf, model, label = "gpt2-pipeline", [f"model=gpt2-{size}"], f"gpt2-{size}"
        ref = measure_reference(size, out, steps=a.steps, warmup=a.warmup, ref_dir=a.ref_dir)
        if ref is None:
            return
        variants = variants or default_variants(SHAPES[size][1], gpus)
    else:
        conf, model, label, ref = size, [], size, None
        variants = variants or ["recipe"]
    for variant in variants:
        env, overrides = split_variant(variant)
        run_dir = next_run_dir(out)
        log = run_dir.with_name(run_dir.name + ".log")
        cmd = mpcli_train(f"conf={conf}", *model, f"train.steps={a.steps}", *COMPARE_FIXED, *overrides)
        start = time.time()
        status = run_logged([*cmd, "--quiet", "--run-dir", str(run_dir)], log, timeout=a.run_timeout,
                            env={**os.environ, **env})  # fmt: skip
        if status != 0:
            print(f"FAILED or cut off: {variant}")
            print(tail(log, 3))
            print(tail(run_dir / "logs" / "rank_0.log", 5), flush=True)
        records = read_metrics(run_dir / "metrics.jsonl")
        append_row(
            out / "table.md", table_row(ref, records, f"{label} {variant}", a.warmup, time.time() - start)
        )


def cmd_compare(a: argparse.Namespace) -> None:
    a.out.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in (a.variants or "").split(";") if v.strip()]
    gpus = visible_gpus()
    for size in (word for item in a.model for word in item.split()):
        compare_size(a.out, size, variants, gpus=gpus, a=a)


def compare_args(a: argparse.Namespace) -> list[object]:
    return ["--steps", a.steps, "--warmup", a.warmup, "--run-timeout", a.run_timeout]


def cmd_matrix(a: argparse.Namespace) -> None:
    """Phase 1, side by side on disjoint GPUs: GPU 0 gpt2-medium and gpt2-large alone; GPU 3 gpt2-xl
    alone; GPUs 1,2 gpt2-xl pp2, then gpt2-large tp2 and tp2 with async TP. Phase 2 on all four GPUs:
    gpt2-large pp2 x tp2, gpt2-xl pp4 (fastest, then least memory) and the gpt-7b recipe. Each lane
    measures its references on its own first GPU just before its runs; phase 2 reuses phase 1's."""
    if visible_gpus() < 4:
        raise SystemExit("matrix needs 4 GPUs")
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    lanes = {
        "single0": ("0", [("medium", "none"), ("large", "none")]),
        "single3": ("3", [("xl", "none")]),
        "pair12": ("1,2", [("xl", "pp2"), ("large", "tp2;tp2async")]),
    }

    def lane(name: str, devices: str, pairs: list[tuple[str, str]]) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
        with (out / f"{name}.log").open("w") as log:
            for size, variants in pairs:
                cmd = driver("compare", out / name, "--model", size, "--variants", variants, *compare_args(a))
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)

    threads = [threading.Thread(target=lane, args=(name, *spec)) for name, spec in lanes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merge_tables([out / name / "table.md" for name in lanes], out / "table.md")
    print(f"phase 1 done {time.strftime('%H:%M:%S')}", flush=True)

    refs = out / "refs"
    refs.mkdir(exist_ok=True)
    for ref in (out / "single0" / "ref_large.json", out / "single3" / "ref_xl.json"):
        if ref.is_file():
            shutil.copy(ref, refs)
    with (out / "all4.log").open("w") as log:
        for size, variants, ref_dir in (
            ("large", "pp2tp2", refs),
            ("xl", "pp4;pp4mem", refs),
            ("gpt-7b", "", None),
        ):
            extra = ["--ref-dir", ref_dir] if ref_dir else []
            cmd = driver(
                "compare", out / "all4", "--model", size, "--variants", variants, *compare_args(a), *extra
            )
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    merge_tables([out / name / "table.md" for name in [*lanes, "all4"]], out / "table.md")
    print(f"phase 2 done {time.strftime('%H:%M:%S')}", flush=True)
    (out / "done").touch()


# --- one rank, profiles, traces, the step model --------------------------------------------------------


def cmd_one_rank(a: argparse.Namespace) -> None:
    from bench import one_rank

    one_rank.main(
        a.overrides,
        steps=a.steps,
        warmup=a.warmup,
        async_tp_check=a.async_tp_check,
        profile_dir=a.profile,
        sync_debug=a.sync_debug,
    )


def cmd_profile(a: argparse.Namespace) -> None:
    from bench import profile_step

    profile_step.main(a.out, a.overrides, trace=a.trace)


def cmd_probe(a: argparse.Namespace) -> None:
    """Profile one layout on every rank (compiled, with traces), then summarise each rank's trace: a
    collective far longer than its minimum is waiting for another rank; the rank whose collectives stay
    near their minimum is the one the others wait for; host busy near 100% of the window: host-bound."""
    from bench import trace_summary

    probe = a.out / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    model = a.model if a.model.startswith("gpt") else f"gpt2-{a.model}"
    overrides = [f"model={model}", "train.eval_every=0", "checkpoint.every=0", "train.timeline_steps=0",
                 "train.compile=true", *a.overrides, "name=probe"]  # fmt: skip
    status = run_logged(
        driver("profile", probe, "--trace", *overrides), probe / "run.log", timeout=a.run_timeout
    )
    if status != 0:
        print("profile failed or cut off")
        print(tail(probe / "run.log", 5), flush=True)
    ops = probe / "profile_probe.txt"
    if ops.is_file():
        print(ops.read_text().splitlines()[0])
    summary = "\n".join(
        trace_summary.summarise(str(t)) for t in sorted(probe.glob("trace_probe_rank*.json.gz"))
    )
    print(summary)
    (probe / "summary.txt").write_text(summary + "\n")


def cmd_trace_summary(a: argparse.Namespace) -> None:
    from bench import trace_summary

    for trace in a.traces:
        print(trace_summary.summarise(str(trace)) if trace.is_file() else f"{trace}: no such file")


def cmd_fit_step_model(a: argparse.Namespace) -> None:
    from bench import fit_step_model

    fit_step_model.main(a.csv or fit_step_model.MEASURED)


# --- memory estimates, eager layouts, smoke runs, NCCL --------------------------------------------------


def planned_peak(overrides: list[str]) -> tuple[float, list[float]]:
    """`mpcli plan`'s largest per-rank peak and each pipeline rank's, in GiB (no processes)."""
    from mpcli.config.compose import compose
    from mpcli.estimate.layout import estimate
    from mpcli.estimate.profile import profile_model
    from mpcli.plan import with_split

    conf, *rest = overrides
    run = with_split(compose(conf.removeprefix("conf="), rest), cuda_devices=1)
    layout = estimate(run, profile_model(run), bf16=run.train.precision != "fp32")
    return layout.peak / 2**30, [m.total / 2**30 for m in layout.memory]


def suggested_top() -> list[str]:
    """Overrides of the best layout `mpcli plan --suggest` finds for gpt2-xl on 4 GPUs of 80 GiB."""
    from mpcli.config.compose import compose
    from mpcli.estimate.layout import CostModel
    from mpcli.estimate.profile import profile_model
    from mpcli.estimate.suggest import suggest

    run = compose("gpt2-pipeline", ["model=gpt2-xl"])
    best = suggest(run, profile_model(run), gpus=4, gpu_mem_gib=80, cost=CostModel(), bf16=True)[0][0].run
    p = best.parallel
    return [
        f"parallel.pp={p.pp}", f"parallel.tp={p.tp}", f"parallel.dp={p.dp}",
        f"parallel.schedule={p.schedule}", f"parallel.virtual_stages={p.virtual_stages}",
        f"parallel.microbatches={p.microbatches}", f"parallel.sequence_parallel={p.sequence_parallel}",
        f"train.microbatch_size={best.train.microbatch_size}",
    ]  # fmt: skip


def plan_layout_overrides(spec: str) -> list[str]:
    return [word for item in spec.split() for word in (suggested_top() if item == "suggested" else [item])]


def cmd_plan_vs_measured(a: argparse.Namespace) -> None:
    """Each layout trains 5 eager steps; "measured" is the largest max_mem_gb in its metrics.jsonl (the
    max over ranks of torch.cuda.max_memory_allocated), "plan" the largest per-rank peak `mpcli plan`
    predicts. Layouts needing more GPUs than are visible are skipped."""
    out = a.out
    (out / "runs").mkdir(parents=True, exist_ok=True)
    torch_banner()
    gpus = visible_gpus()
    for name, world, spec in PLAN_LAYOUTS:
        if a.only and not re.search(a.only, name):
            continue
        if world > gpus:
            print(f"skip  {name} (needs {world} GPUs)", flush=True)
            continue
        overrides = [*plan_layout_overrides(spec), *PLAN_FIXED]
        plan, per_rank = planned_peak(overrides)
        run_dir = out / "runs" / name
        log = out / f"{name}.log"
        if run_logged([*mpcli_train(*overrides), "--quiet", "--run-dir", str(run_dir)], log) != 0:
            print(f"FAIL  {name}: {tail(log, 3)}", flush=True)
            continue
        shutil.copy(run_dir / "metrics.jsonl", out / f"{name}.metrics.jsonl")
        got = max((r.get("max_mem_gb") or 0) for r in read_metrics(run_dir / "metrics.jsonl"))
        ranks = " ".join(f"{m:.2f}" for m in per_rank)
        print(f"{name:<28} plan {plan:7.2f} GiB  measured {got:7.2f} GiB  error {(plan - got) / got:+6.1%}  "
              f"(plan per pp rank: {ranks})", flush=True)  # fmt: skip
    shutil.rmtree(out / "runs", ignore_errors=True)


def run_printed(
    name: str, overrides: list[str], run_dir: Path, *, warmup: int, failed_log_lines: int
) -> None:
    """One eager mpcli run with its output shown (the live table's box lines left out) and its summary
    row; on failure the tail of every rank's log."""
    print(f"=== {name}: {' '.join(overrides)}", flush=True)
    start = time.time()
    done = subprocess.run([*mpcli_train(*overrides), "--quiet", "--run-dir", str(run_dir)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    print("\n".join(line for line in done.stdout.splitlines() if not re.match("[┃│┏┡└┌]", line)), flush=True)
    if done.returncode != 0:
        for log in sorted((run_dir / "logs").glob("rank_*.log")):
            print(f"--- {log}\n{tail(log, failed_log_lines)}", flush=True)
    records = read_metrics(run_dir / "metrics.jsonl")
    print(table_row(None, records, name, warmup, time.time() - start), flush=True)


def cmd_layouts(a: argparse.Namespace) -> None:
    """Eager layouts on a 4-GPU machine (NCCL, bf16), each with its metrics.jsonl copied to OUT."""
    out = a.out
    (out / "runs").mkdir(parents=True, exist_ok=True)
    torch_banner()
    for name, overrides in EAGER_LAYOUTS:
        steps = int(next(w for w in overrides if w.startswith("train.steps=")).split("=")[1])
        run_printed(name, overrides, out / "runs" / name, warmup=steps // 4, failed_log_lines=20)
        with contextlib.suppress(FileNotFoundError):
            shutil.copy(out / "runs" / name / "metrics.jsonl", out / f"{name}.jsonl")
    shutil.rmtree(out / "runs", ignore_errors=True)


def cmd_smoke(a: argparse.Namespace) -> None:
    """gpt2-small with the gpt2-pipeline recipe, 50 eager steps each: pp2, pp1, pp1 x dp2."""
    from torch.distributed.pipelining.schedules import ScheduleGPipe

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    torch_banner()
    print("eval:", hasattr(ScheduleGPipe, "eval"), flush=True)
    common = ["conf=gpt2-pipeline", "train.steps=50", "train.eval_every=25", "train.compile=false"]
    for name, overrides in SMOKE_LAYOUTS:
        run_printed(name, [*common, *overrides], out / name, warmup=10, failed_log_lines=30)
        with contextlib.suppress(FileNotFoundError):
            shutil.copy(out / name / "metrics.jsonl", out / f"{name}.metrics.jsonl")


def cmd_nccl_bandwidth(a: argparse.Namespace) -> None:
    gpus = a.gpus or visible_gpus()
    if gpus < 2:
        raise SystemExit("nccl-bandwidth needs at least 2 GPUs")
    worker = DRIVER.with_name("nccl_bandwidth.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", str(worker)]
    raise SystemExit(subprocess.run(cmd, check=False).returncode)


# --- the command line ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def command(name: str, handler: Handler, text: str, **kwargs: object) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, **kwargs)
        p.set_defaults(handler=handler)
        return p

    def timing(p: argparse.ArgumentParser, steps: int, warmup: int, what: str) -> None:
        p.add_argument("--steps", type=int, default=steps, help=f"timed steps (default {steps})")
        p.add_argument("--warmup", type=int, default=warmup, help=f"{what} (default {warmup})")

    p = command("reference", cmd_reference, "the plain single-GPU GPT-2 step (no mpcli): one JSON line")
    p.add_argument("--model", choices=sorted(SHAPES), default="medium", help="GPT-2 size (default medium)")
    for name in ("layers", "heads", "dim"):
        p.add_argument(f"--{name}", type=int, help="overrides --model's")
    for name, default in (("batch", 16), ("seq", 1024), ("vocab", 50304)):
        p.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    timing(p, 30, 10, "untimed steps first")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU (default 989: H100/H200 bf16)")

    p = command("reference-llama", cmd_reference_llama, "the plain single-GPU Llama step", add_help=False)
    p.set_defaults(passthrough=[])  # --help included: bench/reference_llama.py parses them

    for p in (
        command("compare", cmd_compare, "the reference and mpcli layouts of one model: a row per run"),
        command("matrix", cmd_matrix, "every size and layout on one 4-GPU machine, in lanes of GPUs"),
    ):
        p.add_argument("out", type=Path, metavar="OUT")
        timing(p, 30, 10, "steps left out of the means")
        p.add_argument("--run-timeout", type=float, default=420.0, help="seconds per mpcli run (default 420)")
    compare = sub.choices["compare"]
    compare.add_argument("--model", nargs="+", required=True, help="medium, large, xl or a recipe (gpt-7b)")
    compare.add_argument(
        "--variants",
        help=f"';'-separated layouts: a name ({', '.join(NAMED)}) or overrides, optionally led by "
        "environment words (TORCHINDUCTOR_CPP_WRAPPER=1 parallel.pp=2); default: every named layout "
        "the visible GPUs and the model's heads allow",
    )
    compare.add_argument("--ref-dir", type=Path, help="reuse ref_SIZE.json found here instead of measuring")

    p = command("one-rank", cmd_one_rank, "rank 0 of a tp/dp layout alone, collectives faked: one JSON line")
    timing(p, 10, 5, "untimed steps first")
    p.add_argument("--async-tp-check", action="store_true", help="count async TP's fused ops in one step")
    p.add_argument("--profile", type=Path, metavar="DIR", help="profile 2 more steps: trace and op table")
    p.add_argument("--sync-debug", action="store_true", help="print where a step makes the host wait")
    p.add_argument("overrides", nargs="*", help="mpcli overrides (gpt2-pipeline recipe)")

    p = command("profile", cmd_profile, "torch.profiler over 3 steps of one layout, launched through mpcli")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--trace", action="store_true", help="write every rank's trace")
    p.add_argument("overrides", nargs="*", help="mpcli overrides (gpt2-pipeline recipe)")

    p = command("probe", cmd_probe, "profile every rank of one compiled layout and summarise the traces")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--model", required=True, help="GPT-2 size: small, medium, large, xl")
    p.add_argument("--run-timeout", type=float, default=420.0, help="seconds (default 420)")
    p.add_argument(
        "overrides", nargs="*", help="mpcli overrides, e.g. parallel=tensor train.microbatch_size=16"
    )

    p = command("trace-summary", cmd_trace_summary, "GPU busy, NCCL, idle and host time per rank's trace")
    p.add_argument("traces", nargs="+", type=Path, metavar="TRACE")

    p = command("fit-step-model", cmd_fit_step_model, "fit mpcli plan's step-time constants (no GPU)")
    p.add_argument("csv", nargs="?", type=Path, help="measured runs (default bench/measured_steps.csv)")

    p = command("plan-vs-measured", cmd_plan_vs_measured, "mpcli plan's peak memory against the measured")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--only", help="regular expression: run the matching layouts only")

    p = command("layouts", cmd_layouts, "eager tensor, hybrid, pipeline, CNN and MLP runs on 4 GPUs")
    p.add_argument("out", type=Path, metavar="OUT")
    p = command("smoke", cmd_smoke, "gpt2-small eager: pp2, pp1, pp1 x dp2 on up to 2 GPUs")
    p.add_argument("out", type=Path, metavar="OUT")

    p = command("nccl-bandwidth", cmd_nccl_bandwidth, "collective bandwidth between this machine's GPUs")
    p.add_argument("--gpus", type=int, help="processes (default: every visible GPU)")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    top = parser()
    # Overrides (k=v) may come before or after the options: whatever argparse leaves over joins them.
    args, extra = top.parse_known_args(argv)
    if isinstance(getattr(args, "passthrough", None), list):  # reference-llama: every word is its own
        args.passthrough, extra = extra, []
    if extra:
        if not isinstance(getattr(args, "overrides", None), list) or any(w.startswith("-") for w in extra):
            top.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    args.handler(args)


if __name__ == "__main__":
    main()
