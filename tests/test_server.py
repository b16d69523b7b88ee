"""`retriever serve`: the real server in subprocesses on 127.0.0.1, talked to over HTTP with httpx."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from retriever import Retriever
from retriever.commit import write_lock
from retriever.server import MAX_BODY_BYTES
from tests.conftest import make_corpus

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-0123"
TEXTS = [t for t in make_corpus(200, 23) if len(t.split()) >= 15][:40]
HIT_FIELDS = {"rank", "id", "score", "title", "passage", "span", "source", "metadata"}


@pytest.fixture(scope="module")
def index_dir(st_model_dir, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("served") / "idx"
    Retriever.create(directory, st_model_dir).add(
        [{"id": f"d{i}", "title": f"title {i}", "text": text, "team": ["ops", "dev"][i % 2]}
         for i, text in enumerate(TEXTS[:20])])
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m retriever_command serve` on a free port of 127.0.0.1, its output in a log file."""

    def __init__(self, index_dir: Path, log: Path, api_key: str | None):
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "RETRIEVER_API_KEY"}
        if api_key is not None:
            env["RETRIEVER_API_KEY"] = api_key
        self.headers = {"X-API-Key": api_key} if api_key else {}
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retriever_command", "serve", "--index", str(index_dir),
                 "--port", self.url.rsplit(":", 1)[1], "--wait", "0.5"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_until_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the server exited: {self.log.read_text()}"
            try:
                if httpx.get(f"{self.url}/health", headers=self.headers, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /health within {timeout} s: {self.log.read_text()}"
            time.sleep(0.2)

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={**self.headers, **headers}, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def servers(index_dir, tmp_path_factory):
    """Two servers on one index: one that wants an API key, one that does not."""
    logs = tmp_path_factory.mktemp("server_logs")
    keyed, open_ = Server(index_dir, logs / "keyed.log", KEY), Server(index_dir, logs / "open.log", None)
    try:
        keyed.wait_until_up()
        open_.wait_until_up()
        yield keyed, open_
    finally:
        keyed.stop()
        open_.stop()
    for server in (keyed, open_):
        log = server.log.read_text()
        # uvicorn shuts down gracefully, then ends by the signal it got
        assert server.process.returncode in (0, -signal.SIGTERM) and "Finished server process" in log, log
        assert "Traceback" not in log, log


@pytest.fixture
def keyed(servers):
    with servers[0].client() as client:
        yield client


@pytest.fixture
def unkeyed(servers):
    with servers[1].client() as client:
        yield client


def _generation(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


# ---- endpoints ---------------------------------------------------------------------------------

def test_health_info_and_the_openapi_page(keyed, index_dir):
    health = keyed.get("/health").json()
    assert health["status"] == "ok" and health["generation"].startswith("gen-")
    info = keyed.get("/info").json()
    assert info["documents"] == 20 and info["directory"] == str(index_dir.resolve())
    paths = keyed.get("/openapi.json").json()["paths"]
    assert {"/search", "/documents", "/documents/{doc_id}", "/info", "/health"} <= set(paths)
    page = keyed.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()


@pytest.mark.parametrize("options", [{}, {"mode": "dense"}, {"mode": "lexical"}, {"fusion": "rrf"},
                                     {"where": {"team": "ops"}, "k": 3}])
def test_search_answers_what_retriever_search_answers(keyed, index_dir, options):
    reference = Retriever.open(index_dir)
    answer = keyed.post("/search", json={"query": TEXTS[4], **options}).json()
    want = reference.search(TEXTS[4], **options)
    assert [(h["id"], h["rank"]) for h in answer["hits"]] == [(h.id, h.rank) for h in want]
    assert [h["score"] for h in answer["hits"]] == pytest.approx([h.score for h in want], rel=1e-5, abs=1e-6)
    assert set(answer["hits"][0]) == HIT_FIELDS and answer["query"] == TEXTS[4]
    assert answer["mode"] == options.get("mode", "hybrid")
    batch = keyed.post("/search", json={"queries": [TEXTS[1], TEXTS[2]], **options}).json()
    assert [[h["id"] for h in result["hits"]] for result in batch["results"]] == \
        [[h.id for h in hits] for hits in reference.search_batch([TEXTS[1], TEXTS[2]], **options)]
    assert [result["query"] for result in batch["results"]] == [TEXTS[1], TEXTS[2]]


def test_documents_are_added_read_replaced_and_removed(keyed, unkeyed):
    document = {"id": "notes/new.txt", "title": "New", "text": TEXTS[25], "team": "qa"}
    added = keyed.post("/documents", json={"documents": [document]}).json()
    assert added["added"] == ["notes/new.txt"] and added["chunks_embedded"] == 1
    for client in (keyed, unkeyed):  # the other server, another process, sees the commit too
        assert client.get("/documents/notes/new.txt").json() == {
            "id": "notes/new.txt", "title": "New", "text": TEXTS[25], "source": "", "metadata": {"team": "qa"}}
        answer = client.post("/search", json={"query": TEXTS[25], "k": 3}).json()
        assert answer["hits"][0]["id"] == "notes/new.txt"
        assert _generation(answer["generation"]) >= _generation(added["generation"])
    replaced = keyed.post("/documents", json={"documents": [{**document, "text": TEXTS[26]}]}).json()
    assert replaced["updated"] == ["notes/new.txt"]
    assert unkeyed.get("/documents/notes/new.txt").json()["text"] == TEXTS[26]
    assert keyed.post("/documents", json={"documents": [{**document, "text": TEXTS[26]}]}).json()["unchanged"] == 1
    removed = unkeyed.delete("/documents/notes/new.txt")
    assert removed.status_code == 200 and removed.json()["removed"] == ["notes/new.txt"]
    for client in (keyed, unkeyed):
        assert client.get("/documents/notes/new.txt").status_code == 404
        assert "notes/new.txt" not in [h["id"] for h in client.post("/search", json={"query": TEXTS[26]}).json()["hits"]]
    missing = keyed.delete("/documents/notes/new.txt")
    assert missing.status_code == 404 and missing.json() == {"detail": "no document 'notes/new.txt' in the index"}


def test_commits_of_other_processes_are_served(keyed, unkeyed, index_dir):
    writer = Retriever.open(index_dir)
    writer.add([{"id": "outside", "text": TEXTS[27]}])
    for client in (keyed, unkeyed):
        assert client.post("/search", json={"query": TEXTS[27], "k": 1}).json()["hits"][0]["id"] == "outside"
        assert client.get("/documents/outside").status_code == 200
    writer.remove(["outside"])
    for client in (keyed, unkeyed):
        assert client.get("/documents/outside").status_code == 404


# ---- errors ------------------------------------------------------------------------------------

def _chunks(total: int):
    for _ in range(total // 2**20 + 1):
        yield b"x" * 2**20


BAD_REQUESTS = [
    ("post", "/search", {"content": b'{"query": ', "headers": {"content-type": "application/json"}}, 400,
     "malformed JSON at character 10"),
    ("post", "/search", {"json": {}}, 422, "give either query or queries"),
    ("post", "/search", {"json": {"query": "x", "queries": ["y"]}}, 422, "give either query or queries"),
    ("post", "/search", {"json": {"query": "x", "k": 0}}, 422, "k: Input should be greater than or equal to 1"),
    ("post", "/search", {"json": {"query": "x", "k": 1001}}, 422, "k: Input should be less than or equal to 1000"),
    ("post", "/search", {"json": {"query": "x", "k": "many"}}, 422, "k: Input should be a valid integer"),
    ("post", "/search", {"json": {"query": "x", "kk": 3}}, 422, "kk: Extra inputs are not permitted"),
    ("post", "/search", {"json": ["x"]}, 422, "body: Input should be a valid dictionary"),
    ("post", "/search", {"json": {"query": "x", "mode": "sparse"}}, 400, "expected one of dense, lexical, hybrid"),
    ("post", "/search", {"json": {"query": "x", "fusion": "borda"}}, 400, "expected one of rrf"),
    ("post", "/search", {"json": {"query": "x", "where": {"colour": "red"}}}, 400,
     "no document has a metadata field 'colour'"),
    ("post", "/search", {"json": {"query": "   "}}, 400, "empty"),
    ("post", "/documents", {"json": {}}, 422, "documents: Field required"),
    ("post", "/documents", {"json": {"documents": [{"text": "no id"}]}}, 422, "documents.0.id: Field required"),
    ("post", "/documents", {"json": {"documents": [{"id": "x", "text": " "}]}}, 400, "no 'text'"),
    ("post", "/documents", {"json": {"documents": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]}}, 400,
     "duplicate document id 'x'"),
    ("post", "/documents", {"content": b"x" * (MAX_BODY_BYTES + 1)}, 413, "request body over 16,777,216 bytes"),
    ("post", "/documents", {"content": _chunks(MAX_BODY_BYTES)}, 413, "request body over 16,777,216 bytes"),
    ("get", "/documents/missing", {}, 404, "no document 'missing' in the index"),
    ("get", "/nothing-here", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("method, path, request_args, status, detail", BAD_REQUESTS,
                         ids=[f"{m} {p} {s} {d[:24]}" for m, p, _, s, d in BAD_REQUESTS])
def test_bad_requests_get_a_one_line_reason(unkeyed, method, path, request_args, status, detail):
    response = unkeyed.request(method.upper(), path, **request_args)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"] and detail in body["detail"] and "\n" not in body["detail"]
    assert "Traceback" not in response.text


def test_without_the_api_key_a_request_gets_401_and_nothing_else(servers, keyed, unkeyed):
    keyed_server = servers[0]
    requests = [("get", "/health", {}), ("get", "/info", {}), ("get", "/docs", {}), ("get", "/openapi.json", {}),
                ("post", "/search", {"json": {"query": "x"}}), ("get", "/documents/d1", {}),
                ("delete", "/documents/d1", {}),
                ("post", "/documents", {"json": {"documents": [{"id": "intruder", "text": "x"}]}})]
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        with httpx.Client(base_url=keyed_server.url, headers=headers, timeout=60) as client:
            for method, path, args in requests:
                response = getattr(client, method)(path, **args)
                assert response.status_code == 401, (headers, path)
                assert response.json() == {"detail": "missing or wrong API key: send Authorization: Bearer KEY or "
                                                     "X-API-Key: KEY"}
                assert response.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/documents/d1").status_code == 200 and keyed.get("/documents/intruder").status_code == 404
    with keyed_server.client(**{"X-API-Key": "", "Authorization": f"Bearer {KEY}"}) as bearer:
        assert bearer.get("/info").json()["documents"] == 20
    assert unkeyed.get("/info").status_code == 200, "a server without a key wants none"


def test_a_write_waits_for_the_index_lock_then_gets_409(keyed, index_dir):
    document = {"documents": [{"id": "blocked", "text": TEXTS[28]}]}
    with write_lock(index_dir, wait=0):  # this test process is the index's writer meanwhile
        started = time.monotonic()
        response = keyed.post("/documents", json=document)
        assert response.status_code == 409 and time.monotonic() - started >= 0.5  # the servers' --wait
        assert f"another process is writing to this index (pid {os.getpid()}" in response.json()["detail"]
        assert keyed.post("/search", json={"query": TEXTS[3], "k": 1}).status_code == 200, "reads go on"
    assert keyed.post("/documents", json=document).json()["added"] == ["blocked"]
    assert keyed.delete("/documents/blocked").status_code == 200


# ---- load ----------------------------------------------------------------------------------------

def test_concurrent_searches_while_a_writer_commits(servers, keyed):
    """8 clients x 50 searches (4 per server) while documents are added in 5 commits: no errors, every
    answer from a committed generation holding exactly the documents that generation committed, and
    none from a generation older than a commit whose answer came back before the search was sent."""
    batches = [[{"id": f"load-{b}-{j}", "text": TEXTS[20 + (4 * b + j) % 20] + f" batch{b} item{j}"}
                for j in range(4)] for b in range(5)]
    start = _generation(keyed.get("/health").json()["generation"])
    committed = {start: set()}  # generation -> the load documents it holds
    commits: list[tuple[float, int]] = []  # (when its answer came back, generation)
    results: list[tuple[float, int, dict]] = []  # (sent, status, answer)
    errors: list[BaseException] = []

    def write() -> None:
        held: set[str] = set()
        for batch in batches:
            answer = keyed.post("/documents", json={"documents": batch}).json()
            held |= set(answer["added"])
            committed[_generation(answer["generation"])] = set(held)
            commits.append((time.monotonic(), _generation(answer["generation"])))
            time.sleep(0.2)

    def search(server: Server, offset: int) -> None:
        try:
            with server.client() as client:
                for i in range(50):
                    query = batches[(offset + i) % 5][i % 4]["text"] if i % 2 else TEXTS[(offset + i) % 20]
                    sent = time.monotonic()
                    response = client.post("/search", json={"query": query, "k": 5})
                    results.append((sent, response.status_code, response.json()))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write)] + [
        threading.Thread(target=search, args=(servers[i % 2], i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and len(results) == 400
    assert all(status == 200 for _, status, _ in results)
    assert len(commits) == 5
    for sent, _, answer in results:
        generation = _generation(answer["generation"])
        assert generation in committed, f"{answer['generation']} is not a generation that was committed"
        load_ids = {h["id"] for h in answer["hits"] if h["id"].startswith("load-")}
        assert load_ids <= committed[generation]
        newest_known = max((g for done, g in commits if done < sent), default=start)
        assert generation >= newest_known, "an answer from before a commit that had already been answered"
    assert any(_generation(a["generation"]) == commits[-1][1] for _, _, a in results), "the last commit was served"
