"""Estimates made from the config alone (meta device, no processes, no GPU): `mpcli plan`.

profile.py measures the model once per sample on the meta device (parameters, FLOPs, saved
activations, module input/output sizes); gpt2.py derives GPT-2's activations from its shapes;
schedule.py models the pipeline schedules (microbatches in flight, bubble); memory.py and comm.py
turn a layout into per-rank memory and communication; layout.py puts them together; suggest.py ranks
layouts for a number of GPUs; tables.py draws them.
"""
