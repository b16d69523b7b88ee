"""Vectors -> FAISS: a segment's chunk vectors under our chunk ids, inner-product search.

Index types (`--index-type`):
- flat: exact search (IndexFlatIP). Best up to a few hundred thousand chunks.
- hnsw: approximate graph search (IndexHNSWFlat, M=32), a graph per segment; a merge builds the
  merged segment's graph from the stored vectors.
- ivfpq: inverted lists with product-quantised codes, for collections larger than memory.
  One coarse quantizer and one set of codebooks serve every segment: they are trained once, when
  the index first holds `IVFPQ_MIN_TRAIN` chunks, on all of them (segments before that are flat,
  and are merged into the first ivfpq one); later segments start from a copy of a trained one.
  Saved segments are read memory-mapped (faiss.IO_FLAG_MMAP: the inverted lists stay in the file,
  and the page cache holds what searches touch), and merged list by list from their mapped files,
  so neither a reader nor a writer holds the codes of the whole index. faiss.contrib.ondisk's
  OnDiskInvertedLists are not used: their file records its data file's absolute path, which a
  segment built aside and renamed, or an index moved, no longer has (IO_FLAG_ONDISK_SAME_DIR mends
  that but prints on stdout, into `retriever search --json`).

Flat and HNSW sit inside IndexIDMap2, so ids are ours; IVF indexes keep our ids themselves (an
IDMap around IVF breaks on removal: IVF does not renumber what is left, IDMap assumes it). With
faiss-gpu and CUDA, flat and ivfpq indexes search and add on the GPU; they always go through
`index_gpu_to_cpu` before being written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
IVFPQ_MIN_TRAIN = 39 * 256  # what FAISS asks for to train the 256 codes of each PQ sub-space
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 16
# A filter leaves an approximate index few of its vectors to find (RAG apps filter to a team or a
# source): below this share of the collection HNSW scores the admitted vectors exactly, and IVF
# probes IVF_NPROBE / share lists (all of them at a small share), so no admitted chunk is missed.
FILTER_SCAN_SHARE = 0.1
# an ivfpq segment's inverted lists stay in its file, read-only, paged in by the searches that touch them
_IVF_READ_FLAGS = faiss.IO_FLAG_MMAP
# A few queries search on one thread: on a small CPU, OpenMP threads spinning next to torch's cost
# more than they give (a flat search of 100k vectors took 10 ms on two threads, 4 ms on one).
_PARALLEL_QUERIES = 16


class VectorIndexError(ValueError):
    pass


class VectorIndex:
    def __init__(self, index: faiss.Index | None, kind: str, dimension: int, path: Path | None = None):
        self.index = index  # None: an ivfpq index not trained yet
        self.kind = kind
        self.dimension = dimension
        self.path = path  # the file it was read from (ivfpq: memory-mapped), None for one built in memory
        if index is not None:
            self._configure()

    @classmethod
    def new(cls, kind: str, dimension: int) -> VectorIndex:
        if kind not in INDEX_TYPES:
            raise VectorIndexError(f"index type {kind!r}: expected one of {', '.join(INDEX_TYPES)}")
        if kind == "ivfpq":
            return cls(None, kind, dimension)  # its shape depends on the training vectors, see add()
        if kind == "flat":
            inner = faiss.IndexFlatIP(dimension)
        else:
            inner = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return cls(faiss.IndexIDMap2(inner), kind, dimension)

    @classmethod
    def load(cls, path: Path, kind: str, dimension: int, count: int) -> VectorIndex:
        """The index saved at `path`, which must hold `count` vectors (the manifest's chunk count)."""
        if not path.is_file():
            if kind == "ivfpq" and count == 0:  # never trained, so never saved
                return cls.new(kind, dimension)
            raise VectorIndexError(f"{path}: the vectors file is missing")
        try:
            index = cls(faiss.read_index(str(path), _IVF_READ_FLAGS if kind == "ivfpq" else 0), kind, dimension, path)
        except RuntimeError as e:  # faiss's message starts with the C++ function that failed
            raise VectorIndexError(f"{path}: not a readable FAISS index ({str(e).rsplit('Error: ', 1)[-1]})") from e
        if index.ntotal != count:
            raise VectorIndexError(f"{path}: holds {index.ntotal} vectors where the manifest counts {count} chunks")
        return index

    def save(self, path: Path) -> None:
        if self.index is None:
            return
        faiss.write_index(_cpu(self.index), str(path))

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else self.index.ntotal

    def _configure(self) -> None:
        inner = _inner(self.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        elif isinstance(inner, faiss.IndexIVF):
            inner.nprobe = min(IVF_NPROBE, inner.nlist)
            lists = faiss.downcast_InvertedLists(inner.invlists)
            if isinstance(lists, faiss.OnDiskInvertedLists):
                # its default starts 32 threads per search to read the probed lists ahead: 40x slower a
                # query here than the page faults they save
                lists.prefetch_nthread = 0
        self.index = _maybe_gpu(self.index, self.kind)

    @classmethod
    def empty_like(cls, other: VectorIndex) -> VectorIndex:
        """An empty index of `other`'s kind; for ivfpq, with its trained quantizer and codebooks (a
        memory-mapped one cannot be cloned: it is read again, mapped, and given empty lists in memory)."""
        if other.kind != "ivfpq":
            return cls.new(other.kind, other.dimension)
        index = faiss.read_index(str(other.path), _IVF_READ_FLAGS) if other.path else faiss.clone_index(_cpu(other.index))
        ivf = faiss.extract_index_ivf(index)
        lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns it now
        index.ntotal = 0
        return cls(index, other.kind, other.dimension)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds vectors under these ids; an ivfpq index not trained yet trains on them first."""
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.index is None:
            self._train_ivfpq(vectors)
        self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def ids_and_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every id and its vector, as stored (flat and hnsw: exactly)."""
        if self.kind == "ivfpq":
            raise VectorIndexError("ivfpq stores codes, not vectors: merge ivfpq indexes with merge()")
        index = _cpu(self.index)
        return faiss.vector_to_array(index.id_map).astype(np.int64), _inner(index).reconstruct_n(0, index.ntotal)

    @classmethod
    def merge(cls, kind: str, dimension: int, parts: Iterable[VectorIndex], dropped: np.ndarray,
              count: int) -> VectorIndex:
        """One index of `kind` holding the parts' vectors less the `dropped` ids: `count` vectors.
        Flat and hnsw parts are read one at a time (`parts` may read each as it comes: a merge holds
        its result and one part); a flat result is allocated once, at `count` vectors, and filled
        (added part after part, it grew by doubling: up to twice its size, copied at each step).
        Trained ivfpq parts share their training and their codes are copied list by list (from the
        mapped files: a merge holds its result only); flat parts are added (an ivfpq index without a
        trained part trains on all of them)."""
        if kind == "flat":
            result = cls._merge_flat(dimension, parts, dropped, count)
        elif kind == "hnsw":
            result = cls.new(kind, dimension)
            for part in parts:
                ids, vectors = part.ids_and_vectors()
                keep = ~np.isin(ids, dropped)
                result.add(ids[keep], vectors[keep])
        else:
            result = cls._merge_ivfpq(dimension, list(parts), dropped)
        if result.ntotal != count:
            raise VectorIndexError(f"a merge into {count} vectors was given {result.ntotal}")
        return result

    @classmethod
    def _merge_ivfpq(cls, dimension: int, parts: list[VectorIndex], dropped: np.ndarray) -> VectorIndex:
        trained = [part for part in parts if part.kind == "ivfpq"]
        if trained:
            result = cls.empty_like(trained[0])
            for part in parts:
                if part.kind == "ivfpq":
                    result.index.ntotal += _copy_lists(faiss.extract_index_ivf(_cpu(part.index)).invlists,
                                                       faiss.extract_index_ivf(result.index).invlists, dropped)
                else:
                    ids, vectors = part.ids_and_vectors()
                    keep = ~np.isin(ids, dropped)
                    result.add(ids[keep], vectors[keep])
            result.index = _maybe_gpu(result.index, "ivfpq")
            return result
        pairs = [part.ids_and_vectors() for part in parts]  # the first training: on all of them
        ids = np.concatenate([p[0] for p in pairs])
        vectors = np.concatenate([p[1] for p in pairs])
        keep = ~np.isin(ids, dropped)
        result = cls.new("ivfpq", dimension)
        result.add(ids[keep], vectors[keep])
        return result

    @classmethod
    def _merge_flat(cls, dimension: int, parts: Iterable[VectorIndex], dropped: np.ndarray,
                    count: int) -> VectorIndex:
        inner = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIDMap2(inner)
        inner.codes.resize(count * inner.code_size)
        index.id_map.resize(count)
        vectors = faiss.rev_swig_ptr(inner.get_xb(), count * dimension).reshape(count, dimension)
        ids = faiss.rev_swig_ptr(index.id_map.data(), count)
        filled = 0
        for part in parts:
            part_index = _cpu(part.index)
            part_ids = faiss.vector_to_array(part_index.id_map).astype(np.int64)
            keep = ~np.isin(part_ids, dropped)
            kept = int(keep.sum())
            if filled + kept > count:
                raise VectorIndexError(f"a merge into {count} vectors was given more")
            # the part's stored vectors as they are, not reconstructed into a copy of the whole part
            part_vectors = faiss.rev_swig_ptr(_inner(part_index).get_xb(), part.ntotal * dimension)
            vectors[filled:filled + kept] = part_vectors.reshape(-1, dimension)[keep]
            ids[filled:filled + kept] = part_ids[keep]
            filled += kept
            del part, part_index, part_vectors  # one part at a time: freed before the next is read
        inner.ntotal = index.ntotal = filled
        index.construct_rev_map()
        return cls(index, "flat", dimension)

    def _train_ivfpq(self, vectors: np.ndarray) -> None:
        n, dimension = vectors.shape
        if n < IVFPQ_MIN_TRAIN:
            raise VectorIndexError(f"ivfpq trains on at least {IVFPQ_MIN_TRAIN} vectors; {n} given")
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dimension)
        inner = faiss.IndexIVFPQ(quantizer, dimension, nlist, _pq_subspaces(dimension), 8, faiss.METRIC_INNER_PRODUCT)
        inner.train(vectors)
        self.index = inner
        self._configure()

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None, allowed_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each [queries, k'] with k' = min(k, vectors); missing slots have id -1.
        `allowed`: only these ids are searched, or else `excluded` (tombstones; an `allowed` holds
        live ids only): these ids are not. Applied inside the search (an IDSelector), not after it.
        `allowed_share`: the share of the collection `allowed` admits (see FILTER_SCAN_SHARE)."""
        k = min(k, self.ntotal if allowed is None else len(allowed))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None and self.kind == "hnsw" and allowed_share < FILTER_SCAN_SHARE:
            return self._scan(queries, k, allowed)
        # the selectors are held here until the search returns: faiss keeps only pointers to them
        selectors = []
        if allowed is not None:
            selectors.append(faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        elif excluded is not None and len(excluded):
            selectors.append(faiss.IDSelectorBatch(np.asarray(excluded, dtype=np.int64)))
            selectors.append(faiss.IDSelectorNot(selectors[0]))
        params = self._search_parameters(selectors[-1], k, allowed_share) if selectors else None
        if len(queries) >= _PARALLEL_QUERIES:
            return self.index.search(queries, k, params=params)
        threads = faiss.omp_get_max_threads()  # torch shares this OpenMP setting: put it back after
        faiss.omp_set_num_threads(1)
        try:
            return self.index.search(queries, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search_parameters(self, selector: faiss.IDSelector, k: int, allowed_share: float) -> faiss.SearchParameters:
        """The inner index's own kind of parameters (HNSW and IVF refuse others), with the selector, searching
        as deep for k admitted results as an unfiltered search does for k results."""
        inner = _inner(self.index)
        if isinstance(inner, faiss.IndexHNSW):
            depth = math.ceil(max(inner.hnsw.efSearch, k) / allowed_share)
            return faiss.SearchParametersHNSW(sel=selector, efSearch=depth)
        if isinstance(inner, faiss.IndexIVF):
            nprobe = inner.nlist if allowed_share < FILTER_SCAN_SHARE else math.ceil(inner.nprobe / allowed_share)
            return faiss.SearchParametersIVF(sel=selector, nprobe=min(nprobe, inner.nlist))
        return faiss.SearchParameters(sel=selector)

    def _scan(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """search() over the `allowed` vectors alone, exactly: their scores from the stored vectors."""
        index = _cpu(self.index)
        ids = faiss.vector_to_array(index.id_map)
        rows = np.flatnonzero(np.isin(ids, allowed))
        scores = queries @ _inner(index).reconstruct_batch(rows).T if len(rows) else np.zeros((len(queries), 0))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        width = top.shape[1]
        found_scores = np.full((len(queries), k), -np.inf, np.float32)
        found_ids = np.full((len(queries), k), -1, np.int64)
        found_scores[:, :width] = np.take_along_axis(scores, top, axis=1)
        found_ids[:, :width] = ids[rows[top]]
        return found_scores, found_ids


def stored_bytes(kind: str, dimension: int) -> int:
    """What one chunk's vector takes in an index of `kind` (flat and hnsw: float32; ivfpq: its code and id)."""
    return _pq_subspaces(dimension) + 8 if kind == "ivfpq" else 4 * dimension


def _pq_subspaces(dimension: int) -> int:
    """8-bit codes of 4 dimensions each (fewer where the dimension does not divide): one byte per sub-space."""
    return next(m for m in range(dimension // 4, 0, -1) if dimension % m == 0)


def _copy_lists(source: faiss.InvertedLists, target: faiss.InvertedLists, dropped: np.ndarray) -> int:
    """Appends each of `source`'s inverted lists, less the `dropped` ids, to the same list of `target`
    (both of one trained index's lists, so a code means the same in both); returns how many it copied."""
    copied = 0
    for list_no in range(source.nlist):
        size = source.list_size(list_no)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(source.get_ids(list_no), size)
        codes = faiss.rev_swig_ptr(source.get_codes(list_no), size * source.code_size).reshape(size, -1)
        keep = ~np.isin(ids, dropped)
        kept_ids, kept_codes = np.ascontiguousarray(ids[keep]), np.ascontiguousarray(codes[keep])
        target.add_entries(list_no, len(kept_ids), faiss.swig_ptr(kept_ids), faiss.swig_ptr(kept_codes))
        copied += len(kept_ids)
    return copied


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _inner(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


def _cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if _on_gpu(index) else index


def _on_gpu(index: faiss.Index) -> bool:
    return hasattr(faiss, "GpuIndex") and isinstance(_inner(index), faiss.GpuIndex)


def _maybe_gpu(index, kind: str):
    """Flat and IVF indexes move to the GPU when faiss-gpu sees one (HNSW has no GPU version)."""
    if kind == "hnsw" or not _gpu_available():
        return index
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.__dict__["_resources"] = resources  # the resources must live as long as the index
    return gpu_index
