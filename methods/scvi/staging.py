"""The data path (editable surface): counts staged on the device once, or streamed in chunks.

``DeviceSource`` keeps the whole (filtered) count matrix on the device, dense or CSR, and
draws each epoch's shuffled minibatches as index tensors on the device: no per-batch host →
device copy. ``StreamSource`` is the fallback for data larger than device memory: row chunks
are read from the host matrix or a backed h5ad file (in ``workers`` processes), shuffled
within the chunk and copied to the device minibatch by minibatch.

Both draw epoch ``e``'s order from a generator seeded by (seed, e), so a loader position is
just (epoch, batch) and a resumed run sees the same minibatches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import gammaln

from methods.scvi.likelihood import Nonzeros

MIN_LAST_BATCH = 3  # BatchNorm needs more than one cell; smaller tails are dropped


@dataclass
class Batch:
    x: torch.Tensor  # (B, G) counts
    batch: torch.Tensor  # (B,) int64 batch codes
    log_lib: torch.Tensor  # (B,) log Σ_g x
    lgamma_x1: torch.Tensor  # (B,) Σ_g lgamma(x + 1)
    nz: Nonzeros | None = None  # the nonzero entries of x, when the layout knows them


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Minibatch slices of an epoch of n cells; a tail under MIN_LAST_BATCH cells is dropped."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if bounds and bounds[-1][1] - bounds[-1][0] < MIN_LAST_BATCH and len(bounds) > 1:
        bounds.pop()
    return bounds


def row_stats(x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: log library size and Σ_g lgamma(x + 1) (float64)."""
    umi = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    lg = np.zeros(x.shape[0])
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    np.add.at(lg, rows, gammaln(np.asarray(x.data, dtype=np.float64) + 1.0))
    return np.log(umi), lg


@dataclass
class HostData:
    """Filtered inputs on the host. ``x`` is a CSR matrix, or None when rows come from ``reader``."""

    x: sp.csr_matrix | None
    reader: Any  # RowReader for streamed files, else None
    batch: np.ndarray  # (n,) int64
    log_lib: np.ndarray  # (n,)
    lgamma_x1: np.ndarray  # (n,)
    n_genes: int

    @property
    def n_cells(self) -> int:
        return int(self.batch.shape[0])

    def dense_bytes(self, itemsize: int) -> int:
        return self.n_cells * self.n_genes * itemsize

    def csr_bytes(self, itemsize: int) -> int:
        nnz = self.x.nnz if self.x is not None else self.n_cells * self.n_genes
        return nnz * (itemsize + 8) + (self.n_cells + 1) * 8

    def rows(self, idx: np.ndarray) -> sp.csr_matrix:
        """Rows ``idx`` (any order) as CSR float32."""
        if self.x is not None:
            return self.x[idx]
        return self.reader.take(idx)


def free_memory(device: torch.device) -> int:
    """Bytes free on the device (CUDA) or available host memory (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(8 * 2**30)


def choose_layout(host: HostData, staging: str, fraction: float, device: torch.device) -> str:
    """``staging``, or for auto: backed data stream; on CPU CSR (its nonzeros spare the
    likelihood most of its work); on CUDA dense if it fits, else CSR, else stream."""
    if staging != "auto":
        return staging
    if host.x is None:
        return "stream"
    budget = fraction * free_memory(device)
    if device.type == "cuda" and host.dense_bytes(4) <= budget:
        return "dense"
    return "csr" if host.csr_bytes(4) <= budget else "stream"


class DeviceSource:
    """The whole count matrix on the device (dense or CSR); minibatches gathered there."""

    def __init__(
        self, host: HostData, layout: str, device: torch.device, dtype: torch.dtype
    ) -> None:
        x = host.x if host.x is not None else host.reader.take(np.arange(host.n_cells))
        self.layout, self.device, self.dtype = layout, device, dtype
        self.n_genes = host.n_genes
        self.host_csr: sp.csr_matrix | None = None
        if layout == "dense":
            self.counts = torch.as_tensor(x.toarray(), dtype=dtype).to(device)
        elif device.type == "cpu":  # the host is the device: scipy gathers rows in C
            self.host_csr = sp.csr_matrix(x, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
            self.host_csr.sort_indices()
        else:
            self.indptr = torch.as_tensor(x.indptr, dtype=torch.int64).to(device)
            self.indices = torch.as_tensor(x.indices, dtype=torch.int64).to(device)
            self.data = torch.as_tensor(x.data, dtype=dtype).to(device)
        self.batch = torch.as_tensor(host.batch, dtype=torch.int64).to(device)
        self.log_lib = torch.as_tensor(host.log_lib, dtype=dtype).to(device)
        self.lgamma_x1 = torch.as_tensor(host.lgamma_x1, dtype=dtype).to(device)

    def _rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, Nonzeros | None]:
        """Dense rows ``idx`` and, for CSR, their nonzero entries."""
        g = self.n_genes
        if self.layout == "dense":
            return self.counts.index_select(0, idx), None
        if self.host_csr is not None:
            m = self.host_csr[idx.numpy()]
            rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
            cols = m.indices.astype(np.int64)
            nz = Nonzeros(
                torch.from_numpy(rows * g + cols),
                torch.from_numpy(rows),
                torch.from_numpy(cols),
                torch.from_numpy(m.data),
            )
            return torch.from_numpy(m.toarray()), nz
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        lens = ends - starts
        rows = torch.repeat_interleave(torch.arange(idx.numel(), device=self.device), lens)
        offsets = torch.cumsum(lens, 0) - lens
        pos = torch.arange(rows.numel(), device=self.device) - offsets[rows] + starts[rows]
        cols = self.indices[pos]
        nz = Nonzeros(rows * g + cols, rows, cols, self.data[pos])
        out = torch.zeros(idx.numel() * g, dtype=self.dtype, device=self.device)
        out.index_put_((nz.flat,), nz.vals)
        return out.view(idx.numel(), g), nz

    def gather(self, idx: torch.Tensor) -> Batch:
        x, nz = self._rows(idx)
        return Batch(x, self.batch[idx], self.log_lib[idx], self.lgamma_x1[idx], nz)

    def epoch(
        self, train_idx: torch.Tensor, batch_size: int, seed: int, epoch: int, start: int = 0
    ) -> Iterator[Batch]:
        """Epoch ``epoch``'s shuffled minibatches, from batch number ``start`` on."""
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(seed, epoch))
        order = train_idx[torch.randperm(train_idx.numel(), generator=gen, device=self.device)]
        for lo, hi in batch_bounds(order.numel(), batch_size)[start:]:
            yield self.gather(order[lo:hi])


class ChunkReader(torch.utils.data.Dataset):
    """Chunk c → (cell ids, dense float32 rows) of the training cells in rows [c·size, ...)."""

    def __init__(self, host: HostData, train_mask: np.ndarray, chunk: int, seed: int) -> None:
        self.host, self.mask, self.chunk, self.seed = host, train_mask, chunk, seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.host.n_cells / self.chunk)

    def __getitem__(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = c * self.chunk, min((c + 1) * self.chunk, self.host.n_cells)
        ids = lo + np.flatnonzero(self.mask[lo:hi])
        rng = np.random.default_rng([epoch_seed(self.seed, self.epoch), c])
        ids = ids[rng.permutation(ids.size)]
        if self.host.x is not None:
            block = self.host.x[ids]
        else:
            block = self.host.reader.read(lo, hi)[ids - lo]
        return ids, np.asarray(block.toarray(), dtype=np.float32)


class StreamSource:
    """Minibatches streamed from host memory or a backed file, chunk by chunk."""

    def __init__(
        self,
        host: HostData,
        train_mask: np.ndarray,
        device: torch.device,
        dtype: torch.dtype,
        chunk: int,
        workers: int,
        seed: int,
    ) -> None:
        self.host, self.device, self.dtype, self.workers = host, device, dtype, workers
        self.reader = ChunkReader(host, train_mask, chunk, seed)
        self.n_train = int(train_mask.sum())
        self.pin = device.type == "cuda"

    def _to_device(self, ids: np.ndarray, x: np.ndarray) -> Batch:
        xt = torch.from_numpy(x)
        if self.pin:
            xt = xt.pin_memory()
        h = self.host

        def dev(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(a[ids], dtype=dtype).to(self.device, non_blocking=True)

        return Batch(
            xt.to(self.device, self.dtype, non_blocking=True),
            dev(h.batch, torch.int64),
            dev(h.log_lib, self.dtype),
            dev(h.lgamma_x1, self.dtype),
        )

    def epoch(self, batch_size: int, seed: int, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Chunks in a seeded order, cells shuffled within each; full minibatches across chunks."""
        self.reader.epoch = epoch
        order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.reader))
        loader = torch.utils.data.DataLoader(
            self.reader,
            batch_size=None,
            sampler=order.tolist(),
            num_workers=self.workers,
            persistent_workers=False,
        )
        bounds = batch_bounds(self.n_train, batch_size)
        pend_ids: list[np.ndarray] = []
        pend_x: list[np.ndarray] = []
        n_pend, k = 0, 0
        for ids, x in loader:
            ids, x = np.asarray(ids), np.asarray(x)
            pend_ids.append(ids)
            pend_x.append(x)
            n_pend += ids.size
            while k < len(bounds) and n_pend >= bounds[k][1] - bounds[k][0]:
                size = bounds[k][1] - bounds[k][0]
                all_ids, all_x = np.concatenate(pend_ids), np.concatenate(pend_x)
                if k >= start:
                    yield self._to_device(all_ids[:size], all_x[:size])
                pend_ids, pend_x = [all_ids[size:]], [all_x[size:]]
                n_pend -= size
                k += 1

    def gather_host(self, ids: np.ndarray) -> Batch:
        x = self.host.rows(ids)
        return self._to_device(np.arange(ids.size), np.asarray(x.toarray(), dtype=np.float32))


class RowReader:
    """Rows of a backed h5ad's X (CSR group or dense dataset), opened lazily per process."""

    def __init__(self, path: str, n_genes: int) -> None:
        self.path, self.n_genes = path, n_genes
        self._file: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "n_genes": self.n_genes, "_file": None, "_pid": -1}

    def _x(self) -> Any:
        import os

        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file["X"]

    def read(self, lo: int, hi: int) -> sp.csr_matrix:
        x = self._x()
        if hasattr(x, "shape") and not hasattr(x, "keys"):  # dense dataset
            return sp.csr_matrix(np.asarray(x[lo:hi], dtype=np.float32))
        encoding = x.attrs.get("encoding-type", "")
        if encoding != "csr_matrix":
            raise ValueError(f"{self.path}: X is stored as {encoding}; streaming needs CSR")
        ptr = x["indptr"][lo : hi + 1].astype(np.int64)
        data = np.asarray(x["data"][ptr[0] : ptr[-1]], dtype=np.float32)
        idx = np.asarray(x["indices"][ptr[0] : ptr[-1]])
        return sp.csr_matrix((data, idx, ptr - ptr[0]), shape=(hi - lo, self.n_genes))

    def take(self, rows: np.ndarray) -> sp.csr_matrix:
        """Arbitrary rows, read chunk by chunk over their sorted order."""
        order = np.argsort(rows)
        srt = rows[order]
        parts, lo = [], 0
        while lo < srt.size:
            start = int(srt[lo])
            hi = int(np.searchsorted(srt, start + 65536))
            block = self.read(start, int(srt[hi - 1]) + 1)
            parts.append(block[srt[lo:hi] - start])
            lo = hi
        out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, self.n_genes))
        return out[np.argsort(order)]
