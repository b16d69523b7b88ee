"""`retriever serve`: an index over HTTP, a JSON API on FastAPI (`pip install 'modernbert-retriever[server]'`).

    POST   /search            {"query": "...", "k": 10, "mode": null, "fusion": null, "where": null}, or "queries": [...]
    POST   /documents         {"documents": [{"id": "a1", "title": "...", "text": "...", "team": "ops"}, ...]}: add or replace
    GET    /documents/{id}    the document (404 if absent)      DELETE /documents/{id}   remove it (404 if absent)
    GET    /info              what `retriever info --json` says     GET /health            {"status": "ok", ...}
    GET    /docs              the OpenAPI page (/openapi.json)

Searches run concurrently in the server's thread pool, on a `Retriever` of one committed
generation: before each request the server looks at manifest.json (one stat) and, when a commit
changed it (this server's or any other process's), opens the new generation, warms it and swaps
it in; searches under way finish on the one they started with. Writes go through a second
`Retriever` and the index's one-writer lock: a write waits up to `wait` seconds for another one
(of this server or any process), then gets 409. A search or a document read answered after a write's
response sees that write. Every answer carries the generation it was read from.

Errors are JSON `{"detail": "one line"}`: 400 (malformed JSON, a search the index refuses), 401
(no or wrong API key, when one is set: nothing else is said), 404, 409, 413 (a body over
MAX_BODY_BYTES), 422 (a field missing or out of range); no traceback leaves the server (a 500 says
"internal error" and the server's log has the rest).
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import Headers

from retriever import __version__
from retriever.documents import Document
from retriever.errors import IndexLockedError, RetrieverError
from retriever.index import Retriever, UpdateReport, search_settings
from retriever.manifest import manifest_stamp
from retriever.store import Store

MAX_K = 1000
MAX_QUERIES = 1000
MAX_BODY_BYTES = 16 * 2**20  # a few hundred long documents per POST /documents
# what a new generation is searched for once before it serves: the model and BM25 load then
_WARM_QUERY = "warm up"


# ---- requests ------------------------------------------------------------------------------------

class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, description="One query; or give `queries`.")
    queries: list[str] | None = Field(None, min_length=1, max_length=MAX_QUERIES, description="Several queries.")
    k: int = Field(10, ge=1, le=MAX_K, description="Documents per query.")
    mode: str | None = Field(None, description="dense, lexical or hybrid (default: hybrid).")
    fusion: str | None = Field(None, description="Hybrid search's fusion, NAME[:WEIGHT]: rrf, wrrf, minmax, "
                                                 "zscore or dbsf (default zscore:0.2).")
    where: dict[str, Any] | None = Field(None, description='Metadata filter: {"team": "ops", "year": {">=": 2020}, '
                                                           '"lang": {"in": ["en", "fr"]}}.')

    @model_validator(mode="after")
    def _one_of_query_and_queries(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give either query or queries")
        return self


class DocumentIn(BaseModel):
    """A document; fields other than these become its metadata, as `Retriever.add` takes them."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1)


# ---- the index behind the app --------------------------------------------------------------------

class ServedIndex:
    """A reader of the generation manifest.json names now, and one writer."""

    def __init__(self, directory: Path, wait: float):
        self.directory, self.wait = directory, wait
        self._reopening = threading.Lock()
        self._writing = threading.Lock()
        self._writer: Retriever | None = None
        self._current: tuple[tuple[int, ...], Retriever] | None = None
        self.reader()  # opened now: no index there, or a model that does not load, fails at start

    def reader(self) -> Retriever:
        """The Retriever of the current generation, reopened if a commit changed it since the last call."""
        current = self._current
        if current is None or current[0] != manifest_stamp(self.directory):
            with self._reopening:
                # stamped before the open: a commit landing during it is seen by the next call
                stamp = manifest_stamp(self.directory)
                if self._current is None or self._current[0] != stamp:
                    reader = Retriever.open(self.directory, follow_commits=False)
                    # loads what searches would load lazily, while the generation's files are surely there
                    reader.search(_WARM_QUERY, k=1)
                    self._current = (stamp, reader)
                current = self._current
        return current[1]

    def document(self, doc_id: str) -> Document | None:
        """The document as the current commit holds it. Read on a connection of its own: `Retriever`
        has no public read of a document by id, and its store's connection is guarded by its own lock."""
        reader = self.reader()
        store = Store(reader.store.path, reader.manifest.commit, readonly=True)
        try:
            return store.documents([doc_id]).get(doc_id)
        finally:
            store.close()

    def write(self, change: Callable[[Retriever, float], UpdateReport]) -> tuple[UpdateReport, str]:
        """`change(writer, seconds it may wait for the index's lock)`; its report and the generation it left."""
        started = time.monotonic()
        if not self._writing.acquire(timeout=self.wait):
            raise IndexLockedError(f"{self.directory}: another request has been writing to this index for over "
                                   f"{self.wait:g} s; retry later")
        try:
            if self._writer is None:
                self._writer = Retriever.open(self.directory)
            wait = max(0.0, self.wait - (time.monotonic() - started))
            report = change(self._writer, wait)
            generation = self._writer.manifest.generation
        finally:
            self._writing.release()
        self.reader()  # the write's answer goes out once searches see it
        return report, generation


# ---- the app -------------------------------------------------------------------------------------

def create_app(directory: str | Path, *, api_key: str | None = None, wait: float) -> FastAPI:
    """The HTTP API over the index in `directory`; with `api_key`, every request must carry it
    (`Authorization: Bearer KEY` or `X-API-Key: KEY`). `wait`: seconds a write waits for another writer."""
    index = ServedIndex(Path(directory), wait)
    app = FastAPI(title="modernbert-retriever", version=__version__,
                  description="Search an index of documents (dense, BM25 or hybrid), add and remove documents.")
    app.add_middleware(_Guard, api_key=api_key, max_body=MAX_BODY_BYTES)
    _add_error_handlers(app)

    @app.get("/health")
    def health() -> dict:
        """Up, and the generation searches are answered from."""
        return {"status": "ok", "generation": index.reader().manifest.generation}

    @app.get("/info")
    def info() -> dict:
        """Model, dimension, counts, size, type, times: what `retriever info --json` prints."""
        return index.reader().info()

    @app.post("/search")
    def search(request: SearchRequest) -> dict:
        """The k best documents for `query` ({query, hits}) or for each of `queries` ({results: [{query, hits}]});
        a hit: rank, id, score, title, passage, span (the passage's characters in the text), source, metadata."""
        reader = index.reader()
        queries = [request.query] if request.queries is None else request.queries
        mode, fusion = search_settings(request.mode, request.fusion)
        results = reader.search_batch(queries, k=request.k, mode=mode, fusion=fusion, where=request.where)
        answer = {"mode": mode, "fusion": str(fusion) if fusion else None, "generation": reader.manifest.generation}
        if request.queries is None:
            return {"query": request.query, **answer, "hits": [hit.to_dict() for hit in results[0]]}
        return {**answer, "results": [{"query": query, "hits": [hit.to_dict() for hit in hits]}
                                      for query, hits in zip(queries, results)]}

    @app.post("/documents")
    def add_documents(request: DocumentsRequest) -> dict:
        """Adds documents, or replaces those whose id is indexed and whose content changed."""
        documents = [document.model_dump() for document in request.documents]
        report, generation = index.write(lambda writer, wait: writer.add(documents, wait=wait))
        return {**asdict(report), "generation": generation}

    @app.get("/documents/{doc_id:path}")
    def get_document(doc_id: str) -> dict:
        """The document: id, title, text, source, metadata."""
        document = index.document(doc_id)
        if document is None:
            raise HTTPException(404, f"no document {doc_id!r} in the index")
        return asdict(document)

    @app.delete("/documents/{doc_id:path}")
    def remove_document(doc_id: str) -> dict:
        """Removes the document."""
        report, generation = index.write(lambda writer, wait: writer.remove([doc_id], wait=wait))
        if report.missing:
            raise HTTPException(404, f"no document {doc_id!r} in the index")
        return {"removed": report.removed, "generation": generation}

    return app


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": _one_line(detail)}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0]
        if first["type"] == "json_invalid":
            return _error(400, f"malformed JSON at character {first['loc'][-1]}: "
                               f"{first.get('ctx', {}).get('error', first['msg'])}")
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error(422, f"{where}: {first['msg']}{more}")

    async def refused(request: Request, exc: ValueError) -> JSONResponse:
        return _error(400, str(exc))  # the index's own check of a mode, fusion, filter, query or document

    async def locked(request: Request, exc: IndexLockedError) -> JSONResponse:
        return _error(409, str(exc))

    async def index_error(request: Request, exc: RetrieverError) -> JSONResponse:
        return _error(500, str(exc))

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback on the server after this answer
        return _error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ValueError, refused)
    app.add_exception_handler(IndexLockedError, locked)
    app.add_exception_handler(RetrieverError, index_error)
    app.add_exception_handler(Exception, internal)


class _Guard:
    """Before the app: the API key (401 without it, and nothing else), then the body's size (413)."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    def _authorized(self, headers: Headers) -> bool:
        authorization = headers.get("authorization", "")
        given = authorization[7:].strip() if authorization[:7].lower() == "bearer " else headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.api_key is not None and not self._authorized(headers):
            response = _error(401, "missing or wrong API key: send Authorization: Bearer KEY or X-API-Key: KEY",
                              {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        too_large = f"request body over {self.max_body:,} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _error(413, too_large)(scope, receive, send)
            return
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:  # a chunked body, with no length announced
                raise HTTPException(413, too_large)  # FastAPI answers it while it reads the body
            return message

        await self.app(scope, receive_limited, send)
