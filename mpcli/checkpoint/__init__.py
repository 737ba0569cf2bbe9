"""Sharded checkpoints (torch.distributed.checkpoint): store.py (directories, atomic commit, latest),
state.py (the Checkpointer the training loop uses), parts.py (the Stateful parts it saves),
weights.py (safetensors export and init_from)."""
