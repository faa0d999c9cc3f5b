"""Orbax checkpoints of a run: per-customer training state plus the metadata needed to rebuild it
(resolved config, schema version, customer ids in row order, a fingerprint of data + config)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlstm.config import Config
from jaxlstm.errors import InputError

SCHEMA_VERSION = 3  # 2: each customer's parameters are one flat vector (model.flatten); 3: customer seeds
# are BLAKE2b hashes of the ids (batching.customer_seeds), and the state keeps each customer's epochs trained


def fingerprint(config: Config, *arrays: np.ndarray) -> str:
    """sha256 of the data arrays and of the config keys that change what is trained (epoch count,
    checkpoint cadence and caching may differ between a run and its resume)."""
    h = hashlib.sha256()
    cfg = config.to_dict()
    free = ["epochs", "checkpoint_every", "compilation_cache"]
    # fine-tuned models start from a shared model: its settings count (the pooled one's for point
    # models, the survival one's for own survival models)
    survival, finetune = config.model.loss == "survival", config.model.mode == "finetune"
    if not (finetune and not survival):
        free += ["pooled_epochs", "pooled_batch", "pooled_examples_per_epoch"]
    if not (finetune and survival):
        free += ["survival_epochs"]
    for k in free:
        cfg["train"].pop(k)
    for k in ("within_days", "horizon_days"):  # what is answered, not what is trained
        cfg["data"].pop(k)
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes() if a.dtype != object else "\x00".join(map(str, a.ravel())).encode())
    return h.hexdigest()


def manager(directory: str | Path, keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        Path(directory).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    )


def save(mngr: ocp.CheckpointManager, epoch: int, tree: dict[str, Any], meta: dict[str, Any]) -> None:
    """Save after `epoch` epochs. `tree` holds numpy arrays; Orbax writes to a temporary folder and
    renames it when complete, so a kill mid-save leaves the previous checkpoint intact."""
    meta = {**meta, "schema_version": SCHEMA_VERSION, "epochs_done": epoch}
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))


def read_meta(directory: str | Path) -> tuple[int, dict[str, Any]] | None:
    """(epochs done, metadata) of the latest checkpoint, or None if there is none."""
    if not Path(directory).is_dir():
        return None
    mngr = manager(directory)
    step = mngr.latest_step()
    if step is None:
        return None
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_schema(directory, meta.get("schema_version"))
    return step, meta


def check_schema(where: str | Path, version: int | None) -> None:
    if version != SCHEMA_VERSION:
        raise InputError(f"{where}: written by another jaxlstm version (schema {version}; this one reads "
                         f"{SCHEMA_VERSION}): train it again")


def restore(directory: str | Path, step: int, abstract: dict[str, Any]) -> dict[str, Any]:
    """Restore the state saved at `step` into the structure of `abstract` (shape/dtype leaves)."""
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract)
    return manager(directory).restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]


def save_shared(directory: str | Path, params: Any, center: float) -> None:
    """Save a shared model (pooled or survival): parameters and its centre."""
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(Path(directory).absolute(), {"params": params, "center": np.array(center, np.float32)}, force=True)
    ckptr.wait_until_finished()


def restore_shared(directory: str | Path, abstract_params: Any) -> tuple[Any, float]:
    target = {"params": abstract_params, "center": np.zeros((), np.float32)}
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    tree = ocp.StandardCheckpointer().restore(Path(directory).absolute(), target)
    return jax.tree_util.tree_map(np.asarray, tree["params"]), float(tree["center"])
