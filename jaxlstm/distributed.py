"""Several processes (one per host, or several on one machine) training one run: jax.distributed
joins them; each trains its own disjoint set of chunks on its own devices (placement.py); the
states are gathered with jax's multihost utilities at checkpoints and at the end, so every process
ends with every customer's kept parameters and answers the same (process 0 writes the outputs).

Nothing here is a cluster of our own: the coordinator, the key-value store and the collectives are
jax.distributed's (gloo on CPU).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Join the run's processes (call before anything else touches jax). Arguments default to the
    environment: JAX_COORDINATOR_ADDRESS (HOST:PORT, read by jax itself), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID. Returns False (and does nothing) for a one-process run: none of them given.

    Process 0 hosts the coordinator at `coordinator`; every process must be able to reach it."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator is None and num_processes is None and process_id is None:
        return False
    if coordinator is None or num_processes is None or process_id is None:
        raise ValueError("several processes need all three: a coordinator HOST:PORT, the number of processes and this "
                         "process's id (0 .. N-1)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in 0 .. {num_processes - 1}")
    # CPU collectives (the gathers below) need an implementation across processes; GPUs use NCCL
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Whether this process writes the run's outputs (process 0)."""
    return jax.process_index() == 0


def my_chunks(n_chunks: int) -> list[int]:
    """The chunks this process trains: every process_count()-th, from its index on. Chunks are
    sorted by window count, so this deals the long and the short ones out evenly."""
    return list(range(jax.process_index(), n_chunks, jax.process_count()))


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def gather_chunks(mine: dict[int, Any], n_chunks: int, template: Any) -> list[Any]:
    """Per-chunk trees held by the processes that own them (`mine`: chunk index -> tree, see
    my_chunks) -> every chunk's tree as numpy, on every process. `template`: the shapes and dtypes
    of one chunk's tree (e.g. a compiled program's out_info). One allgather: each process stacks
    its chunks, padded with zeros to the most chunks any process holds."""
    host = {ci: jax.tree_util.tree_map(np.asarray, tree) for ci, tree in mine.items()}
    if jax.process_count() == 1:
        return [host[ci] for ci in range(n_chunks)]
    P = jax.process_count()
    slots = -(-n_chunks // P)
    order = my_chunks(n_chunks)
    stacked = jax.tree_util.tree_map(
        lambda t, *xs: np.stack(list(xs) + [np.zeros(t.shape, t.dtype)] * (slots - len(xs))),
        template, *[host[ci] for ci in order])
    everyone = multihost_utils.process_allgather(stacked)  # leaves [P, slots, ...]
    return [jax.tree_util.tree_map(lambda a, p=ci % P, s=ci // P: np.asarray(a[p, s]), everyone) for ci in range(n_chunks)]


def all_processes(flag: bool) -> bool:
    """True when `flag` holds on every process."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.array(flag))))


def sum_over_processes(values: np.ndarray) -> np.ndarray:
    """Elementwise sum of a small float array over the processes (float32 on the wire)."""
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.float32))).astype(np.float64).sum(0)
