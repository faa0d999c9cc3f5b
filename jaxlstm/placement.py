"""The customer axis and where it lives: one owner for the device mesh that per-customer arrays
(parameters, optimizer state, batches, masks) are sharded over.

Per-customer models never exchange anything, so the customer axis is split over the devices of a
one-axis `jax.sharding.Mesh` ("customers") and each device runs the vmapped one-customer step on
its own block of customers (`shard_map`): no collectives, and every customer computes exactly
what it would on one device. A chunk's customer count is a multiple of the device count; the
padding customers are masked dummies (see batching.pack_chunks and fit: stopped from the start).

Several processes (jax.distributed, see distributed.py): each process places its own chunks on a
mesh of its own local devices, so a chunk never spans hosts and training needs no cross-host
traffic; results are gathered once at checkpoints and at the end.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "customers"

# customers per call on one accelerator for each customer train.chunk_customers asks per CPU device:
# a CPU core is fastest at 128-256 customers per call (the working set fits its cache, PERF.md); a
# GPU is dispatch-bound at that size and wants tens of thousands (benchmarks/gpu_1m.py measures it)
ACCELERATOR_SCALE = 128


@dataclasses.dataclass(frozen=True)
class Placement:
    """A one-axis mesh over `devices` (all addressable by this process). Hashable: compiled
    programs are keyed by it (step.compile_steps)."""

    devices: tuple

    @classmethod
    def local(cls) -> "Placement":
        """Every device this process can address (all visible devices in a one-process run)."""
        return cls(tuple(jax.local_devices()))

    @classmethod
    def single(cls) -> "Placement":
        """This process's first device: the shared models (C = 1) train there."""
        return cls((jax.local_devices()[0],))

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @functools.cached_property
    def mesh(self) -> Mesh:
        return Mesh(np.array(self.devices, dtype=object), (AXIS,))

    @functools.cached_property
    def sharding(self) -> NamedSharding:
        """Leading (customer) axis split over the devices, every other axis whole."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    @functools.cached_property
    def replicated(self) -> NamedSharding:
        """Scalars and other arguments every device reads whole (the run seed, the epoch)."""
        return NamedSharding(self.mesh, PartitionSpec())

    def split(self, axis: int) -> NamedSharding:
        """Axis `axis` split over the devices (the minibatch axis of a shared model's data-parallel
        step, see step.compile_steps(data_parallel=True)), every other axis whole."""
        return NamedSharding(self.mesh, PartitionSpec(*([None] * axis + [AXIS])))

    def round_up(self, n: int) -> int:
        """The smallest multiple of the device count >= max(n, 1): a chunk's customer count."""
        d = self.n_devices
        return -(-max(n, 1) // d) * d

    def chunk_size(self, per_device: int, n_customers: int) -> int:
        """Customers per chunk (per compiled call): `per_device` (train.chunk_customers) on each CPU
        device, ACCELERATOR_SCALE times that on each GPU/TPU, never more than the customers there
        are (rounded up to the device count: the rest of the last chunk is padding)."""
        per = per_device if self.devices[0].platform == "cpu" else per_device * ACCELERATOR_SCALE
        return self.round_up(min(per * self.n_devices, max(n_customers, 1)))

    def spec(self, shape: Sequence[int], dtype: Any, per_customer: bool = True) -> jax.ShapeDtypeStruct:
        """The abstract argument a program is lowered for: sharded over customers (leading axis), or
        replicated."""
        if per_customer and shape and shape[0] % self.n_devices:
            raise ValueError(f"{shape[0]} customers cannot be split over {self.n_devices} devices: pad with round_up")
        return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=self.sharding if per_customer else self.replicated)

    def put(self, tree: Any) -> Any:
        """Host arrays with a leading customer axis -> device arrays sharded over customers."""
        return jax.device_put(tree, self.sharding)

    def shard_map(self, fn, per_customer: Sequence[bool]):
        """fn run by every device on its own block of customers: argument i is split over customers
        where per_customer[i] (a pytree argument as a whole), else read whole (scalars). Every
        output has a leading customer axis. No collectives: customers never interact."""
        in_specs = tuple(PartitionSpec(AXIS) if p else PartitionSpec() for p in per_customer)
        # check_vma=False: the check tracks which values vary across devices, for collectives; there
        # are none here, and it rejects the scans (lax.map init, the LSTM) whose carries start as constants
        return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=PartitionSpec(AXIS), check_vma=False)

def fetch(tree: Any) -> Any:
    """Device arrays (this process's, fully addressable) -> numpy, rows in customer order."""
    return jax.tree_util.tree_map(np.asarray, tree)
