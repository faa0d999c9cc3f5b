"""Windows -> per-customer train/validation split -> padded, masked chunks of customers.

A chunk is C customers packed into fixed-shape arrays; the trainer feeds it to the compiled step
B windows per customer at a time, so every chunk uses the same compiled shapes ([C, B, L, F]).
Customers are sorted by training-window count before chunking, so customers in one chunk need
about the same number of steps and padding stays small.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from jaxlstm.data.windows import Windows, encode, to_bins

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def customer_seeds(keys: np.ndarray) -> np.ndarray:
    """[N] uint64, a hash of each customer's id text: a customer's randomness (init, dropout,
    shuffling, random split) depends on the run seed and its own id only, never on who else is in
    the file or in its chunk.

    The hash is BLAKE2b with an 8-byte digest (RFC 7693, Python's hashlib) of the id's UTF-8 bytes,
    read as a little-endian integer: fixed by its standard, so a run trained under one Python, numpy
    or pandas version answers the same under another (pandas' hash_array, used before, is internal
    to pandas and may change). ~0.7 s per million ids on this project's 2-core CPU."""
    digest = hashlib.blake2b
    raw = b"".join(digest(str(k).encode("utf-8"), digest_size=8).digest() for k in np.asarray(keys).tolist())
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def uniform(seeds: np.ndarray, salt: int, n: int) -> np.ndarray:
    """[C, n] float64 in [0, 1): counter-based random numbers, a pure function of (seed, salt, index)."""
    with np.errstate(over="ignore"):
        base = _splitmix64(seeds.astype(np.uint64) ^ _splitmix64(np.uint64(salt)))
        z = _splitmix64(base[:, None] + np.arange(n, dtype=np.uint64)[None, :])
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_windows(offsets: np.ndarray, seeds: np.ndarray, how: str, val_fraction: float, run_seed: int) -> np.ndarray:
    """[M] bool, True where a window validates.

    temporal: each customer's last round(val_fraction * n) windows, at least one; random: each window with
    probability val_fraction. Either way every customer with windows keeps at least one for training.
    """
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(offsets[-1]) - offsets[owner]  # window position within its customer
    if how == "temporal":
        n_val = np.floor(counts * val_fraction + 0.5).astype(np.int64)
        if val_fraction > 0:  # two windows are enough to validate one: model choice needs it
            n_val = np.maximum(n_val, 1)
        n_val = np.minimum(n_val, np.maximum(counts - 1, 0))
        return pos >= (counts - n_val)[owner]
    width = int(counts.max()) if len(counts) else 0
    u = uniform(seeds, run_seed * 2 + 1, width)  # [N, max windows]
    is_val = u[owner, pos] < val_fraction
    # a customer whose windows all landed in validation trains on its first one
    all_val = np.bincount(owner, weights=~is_val, minlength=len(counts)) == 0
    is_val[offsets[:-1][all_val & (counts > 0)]] = False
    return is_val


@dataclasses.dataclass(frozen=True)
class Chunk:
    """C customers padded to fixed shapes. Rows past a customer's count are padding (masked out).

    rows:    [C] int64 customer index (into Histories), -1 for padding customers
    seeds:   [C, 2] uint32 (hi, lo halves of the customer seed)
    center:  [C] float32, the customer's log1p center (see `centers`)
    x_train: [C, Wt, L, F] float32, y_train: [C, Wt] float32 (regression) or int32 (class id)
    n_train: [C] int32; x_val, y_val, n_val likewise. Wt and Wv are multiples of the batch size.
    """

    rows: np.ndarray
    seeds: np.ndarray
    center: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    n_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_val: np.ndarray

    @property
    def real(self) -> np.ndarray:
        return self.rows >= 0


def seed_halves(seeds: np.ndarray) -> np.ndarray:
    s = seeds.astype(np.uint64)
    return np.stack([(s >> np.uint64(32)).astype(np.uint32), (s & np.uint64(0xFFFFFFFF)).astype(np.uint32)], axis=1)


def model_inputs(x_days: np.ndarray, center: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """[..., L] days -> [..., L, 1 + E] model features: log1p days minus the customer's center, then
    the extra columns' values [..., L, E] (Histories.extras) when there are any."""
    x = (encode(x_days) - center.reshape(center.shape + (1,) * (x_days.ndim - center.ndim)))[..., None]
    return x if extra is None else np.concatenate([x, extra.astype(x.dtype)], -1)


def model_targets(y_days: np.ndarray, center: np.ndarray, bins: tuple[float, ...]) -> np.ndarray:
    return to_bins(y_days, bins) if bins else encode(y_days) - center


def centers(windows: Windows, is_val: np.ndarray) -> np.ndarray:
    """[N] float32, mean log1p of each customer's training targets (0 without any). Inputs and
    targets are shifted by it, so a fresh model already starts near the customer's typical interval."""
    counts = np.diff(windows.offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    train = ~is_val
    total = np.bincount(owner[train], weights=encode(windows.y[train]), minlength=len(counts))
    n = np.bincount(owner[train], minlength=len(counts))
    return (total / np.maximum(n, 1)).astype(np.float32)


def _round_up(n: int, b: int) -> int:
    return max(b, -(-n // b) * b)


def pack_chunks(
    windows: Windows,
    is_val: np.ndarray,
    center: np.ndarray,
    seeds: np.ndarray,
    rows: np.ndarray,
    chunk_size: int,
    batch_size: int,
    bins: tuple[float, ...] = (),
    inputs=None,
    targets=None,
) -> list[Chunk]:
    """Pack customers `rows` (each with >= 1 training window) into chunks of `chunk_size` customers.
    `inputs(window indices, centers) -> [n, L, F]` builds the model inputs (default: `model_inputs`),
    `targets(window indices, centers) -> [n, ...]` the targets (default: `model_targets`)."""
    extra = windows.x_extra
    inputs = inputs or (lambda g, c: model_inputs(windows.x[g], c, None if extra is None else extra[g]))
    targets = targets or (lambda g, c: model_targets(windows.y[g], c, bins))
    counts = np.diff(windows.offsets)
    n_train_all = np.bincount(np.repeat(np.arange(len(counts)), counts)[~is_val], minlength=len(counts))
    rows = np.asarray(rows, np.int64)
    rows = rows[np.lexsort((rows, -n_train_all[rows]))]  # most windows first; ties by row
    C, B = chunk_size, batch_size
    L = windows.x.shape[1]
    F = inputs(np.zeros(1, np.int64), np.zeros(1, np.float32)).shape[-1] if len(windows.x) else 1
    y_dtype = np.int32 if bins else np.float32
    y_extra = targets(np.zeros(1, np.int64), np.zeros(1, np.float32)).shape[1:] if len(windows.x) else ()
    owner = np.repeat(np.arange(len(counts)), counts)
    chunks = []
    for start in range(0, len(rows), C):
        part = np.full(C, -1, np.int64)
        part[: len(rows[start : start + C])] = rows[start : start + C]
        real = part >= 0
        slot_of = np.full(len(counts), -1, np.int64)
        slot_of[part[real]] = np.flatnonzero(real)
        c = np.where(real, center[np.maximum(part, 0)], 0.0).astype(np.float32)
        # this chunk's windows, in customer then time order, split into training and validation
        mine = np.concatenate([np.arange(windows.offsets[r], windows.offsets[r + 1]) for r in part[real]])

        def pack(g):
            """[C, W, L, F] inputs, [C, W] targets and [C] counts of windows g (flat indices)."""
            slot = slot_of[owner[g]]
            n = np.bincount(slot, minlength=C).astype(np.int32)
            col = np.arange(len(g)) - np.r_[0, np.cumsum(n)[:-1]][slot]  # rank within its customer
            W = _round_up(int(n.max()), B) if n.max() > 0 else 0
            x = np.zeros((C, W, L, F), np.float32)
            y = np.zeros((C, W) + y_extra, y_dtype)
            if len(g):
                x[slot, col] = inputs(g, c[slot])
                y[slot, col] = targets(g, c[slot])
            return x, y, n

        x_train, y_train, n_train = pack(mine[~is_val[mine]])
        x_val, y_val, n_val = pack(mine[is_val[mine]])
        chunk_seeds = np.zeros((C, 2), np.uint32)
        chunk_seeds[real] = seed_halves(seeds[part[real]])
        chunks.append(Chunk(part, chunk_seeds, c, x_train, y_train, n_train, x_val, y_val, n_val))
    return chunks


def pad_customers(chunk: Chunk, C: int) -> Chunk:
    """The chunk with padding customers added up to C (no real window, row -1): e.g. to a multiple
    of the device count (placement.Placement.round_up). The chunk itself when it has C already."""
    extra = C - len(chunk.rows)
    if extra == 0:
        return chunk
    if extra < 0:
        raise ValueError(f"a chunk of {len(chunk.rows)} customers cannot be padded to {C}")

    def grow(a: np.ndarray, fill=0) -> np.ndarray:
        return np.concatenate([a, np.full((extra,) + a.shape[1:], fill, a.dtype)])

    return Chunk(grow(chunk.rows, -1), grow(chunk.seeds), grow(chunk.center), grow(chunk.x_train), grow(chunk.y_train),
                 grow(chunk.n_train), grow(chunk.x_val), grow(chunk.y_val), grow(chunk.n_val))
