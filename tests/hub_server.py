"""A minimal Hugging Face Hub-compatible HTTP server for tests: stdlib only, in a thread, on 127.0.0.1 only.

It serves the part of the Hub HTTP API that the real `huggingface_hub` client calls to publish a model folder and
load it back by repo id (read from the client's source, 2.4.0, and confirmed by logging its requests):

| client call                                   | endpoint                                                  |
|-----------------------------------------------|-----------------------------------------------------------|
| `create_repo`                                 | POST /api/repos/create                                    |
| `create_branch`                               | POST /api/models/{repo}/branch/{branch}                   |
| `upload_folder`, `create_commit`              | POST /api/models/{repo}/preupload/{rev}; POST /api/validate-yaml (path without Xet); POST /api/models/{repo}/commit/{rev} (NDJSON) |
| LFS files, only for a client not using Xet    | POST /{repo}.git/info/lfs/objects/batch; PUT /lfs/upload/{oid}; POST /lfs/verify |
| `model_info`, `repo_info`                     | GET /api/models/{repo}[/revision/{rev}]                   |
| `list_repo_files`, `list_repo_tree`           | GET /api/models/{repo}/tree/{rev}[/{path}]                |
| `list_repo_refs`                              | GET /api/models/{repo}/refs                               |
| `hf_hub_download`, `snapshot_download`        | HEAD and GET /{repo}/resolve/{rev}/{path}                 |

Upload modes: as on the Hub, the server decides in `preupload` whether a file travels inline in the commit ("regular")
or out of band ("lfs"). huggingface_hub 2.x sends every "lfs" file through Xet whenever `hf_xet` is installed (only
`HF_HUB_DISABLE_XET=1`, read at import, turns that off), and this server has no Xet storage. So by default it answers
"regular" for every file, which works with any client; `lfs_patterns=("*.safetensors",)` exercises the LFS path for a
client started with `HF_HUB_DISABLE_XET=1`.

Not a Hub: model repos only, one user, everything in memory, no pull requests, no pagination.
"""

import base64
import fnmatch
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


# What the Hub puts in every new repo (shortened): so a pushed repo lists it, exactly as on the Hub.
INITIAL_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file: what the client compares with `_remote_oid` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]
    lfs_paths: frozenset[str] = frozenset()


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full commit oid."""
        return self.commits.get(self.branches.get(revision, revision))

    def add_commit(self, branch: str, message: str, files: dict[str, bytes], lfs_paths: set[str]) -> Commit:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + message.encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_oid(files[path]).encode())
        commit = Commit(digest.hexdigest(), message, files, frozenset(lfs_paths))
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


@dataclass
class LoggedRequest:
    method: str
    path: str
    authorization: str | None


class HubError(Exception):
    """An error answer, with the headers `huggingface_hub.utils.hf_raise_for_status` maps to its exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubServer:
    """Start with `with HubServer() as hub:`; `hub.url` is the value for `HF_ENDPOINT`.

    Args:
        token: when set, every write must carry `Authorization: Bearer <token>`, and so must reads of private repos.
        lfs_patterns: paths matching one of these glob patterns are uploaded as LFS objects (see the module docstring).
        user: the namespace of a repo created without one.
    """

    def __init__(self, token: str | None = None, lfs_patterns: tuple[str, ...] = (), user: str = "tester"):
        self.token = token
        self.lfs_patterns = lfs_patterns
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[LoggedRequest] = []
        # Set to a message to refuse every commit (a failed upload, after the repo exists and files were offered).
        self.refuse_commits: str | None = None
        self.lock = threading.Lock()
        self._signature = secrets.token_hex(16)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        # Port 0: the OS picks a free port; loopback only, never another interface.
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True  # idle keep-alive connections must not hold up stop()
        self._httpd.hub = self
        # A short poll interval keeps stop() (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests

    def list_files(self, repo_id: str, revision: str = "main") -> set[str]:
        return set(self.repos[repo_id].resolve(revision).files)

    def file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        return self.repos[repo_id].resolve(revision).files[path]

    # ------------------------------------------------------------------ routing

    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        # Split before unquoting: the client quotes revisions and tree paths with safe="" ("a%2Fb" is one segment).
        parts = [unquote(part) for part in split.path.strip("/").split("/")]
        auth = headers.get("Authorization")
        with self.lock:
            self.requests.append(LoggedRequest(method, raw_path, auth))
        authorized = self.token is None or auth == f"Bearer {self.token}"
        with self.lock:
            if parts[:1] == ["api"]:
                return self._api(method, parts[1:], query, body, authorized)
            if (
                method == "POST"
                and len(parts) == 6
                and parts[1].endswith(".git")
                and parts[2:] == ["info", "lfs", "objects", "batch"]
            ):
                self._require_write(authorized)
                self._readable_repo(f"{parts[0]}/{parts[1][: -len('.git')]}", authorized)
                return _json(self._lfs_batch(json.loads(body)))
            if method == "PUT" and parts[:2] == ["lfs", "upload"] and len(parts) == 3:
                # Like a presigned storage URL: the client sends no token here, the signature in the URL stands in.
                self._require_write(query.get("signature") == self._signature)
                if hashlib.sha256(body).hexdigest() != parts[2]:
                    raise HubError(400, "LFS object content does not match its sha256")
                self.lfs_objects[parts[2]] = body
                return 200, {}, b""
            if method == "POST" and parts == ["lfs", "verify"]:
                oid = json.loads(body)["oid"]
                if oid not in self.lfs_objects:
                    raise HubError(404, f"LFS object {oid} was not uploaded")
                return _json({"success": True})
            if method in ("HEAD", "GET") and len(parts) >= 5 and parts[2] == "resolve":
                repo = self._readable_repo(f"{parts[0]}/{parts[1]}", authorized)
                return self._resolve(repo, parts[3], "/".join(parts[4:]), headers, method)
        raise HubError(404, f"The test Hub server does not serve {method} {split.path}")

    def _api(self, method: str, parts: list[str], query: dict, body: bytes, authorized: bool):
        if method == "POST" and parts == ["repos", "create"]:
            self._require_write(authorized)
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["validate-yaml"]:
            return _json({"errors": [], "warnings": []})
        if len(parts) < 3 or parts[0] != "models":
            raise HubError(404, f"The test Hub server only serves model repos, not /api/{'/'.join(parts)}")
        repo_id, action, rest = f"{parts[1]}/{parts[2]}", parts[3] if len(parts) > 3 else None, parts[4:]
        if method == "GET" and action in (None, "revision"):
            return _json(self._info(self._readable_repo(repo_id, authorized), rest[0] if rest else "main"))
        if method == "GET" and action == "tree":
            repo = self._readable_repo(repo_id, authorized)
            return _json(
                self._tree(repo, rest[0], "/".join(rest[1:]), query.get("recursive") in ("True", "true", "1"))
            )
        if method == "GET" and action == "refs":
            repo = self._readable_repo(repo_id, authorized)
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in repo.branches.items()]
            return _json({"branches": branches, "converts": [], "tags": []})
        self._require_write(authorized)
        repo = self._readable_repo(repo_id, authorized)
        if query.get("create_pr"):
            raise HubError(400, "The test Hub server does not support pull requests")
        if method == "POST" and action == "branch":
            return self._create_branch(repo, rest[0], json.loads(body or b"{}"))
        if method == "POST" and action == "preupload":
            return _json(self._preupload(repo, rest[0], json.loads(body)))
        if method == "POST" and action == "commit":
            return self._commit(repo, rest[0], body)
        raise HubError(404, f"The test Hub server does not serve {method} /api/{'/'.join(parts)}")

    def _require_write(self, authorized: bool) -> None:
        if not authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

    def _readable_repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        # As on the Hub: a private repo is indistinguishable from a missing one without the right token.
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Revision {revision} not found in {repo.repo_id}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ repos and branches

    def _create_repo(self, payload: dict):
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        if payload.get("type", "model") != "model":
            raise HubError(400, "The test Hub server only hosts model repos")
        if repo_id in self.repos:
            # The client reads the repo URL from this answer too (create_repo(exist_ok=True)).
            raise HubError(409, f"You already created this model repo: {repo_id}", url=f"{self.url}/{repo_id}")
        # huggingface_hub 2.x sends `visibility`, 1.x sends `private`.
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.repos[repo_id] = Repo(repo_id, private)
        repo.add_commit("main", "initial commit", {".gitattributes": INITIAL_GITATTRIBUTES}, set())
        return _json({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _create_branch(self, repo: Repo, branch: str, payload: dict):
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        repo.branches[branch] = self._commit_at(repo, payload.get("startingPoint") or "main").oid
        return _json({})

    # ------------------------------------------------------------------ upload

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> dict:
        current = self._commit_at(repo, revision)
        answers = []
        for entry in payload["files"]:
            path, lfs = entry["path"], self._is_lfs(entry["path"])
            oid = None
            if path in current.files:  # lets the client skip unchanged files, as the Hub does
                content = current.files[path]
                oid = hashlib.sha256(content).hexdigest() if lfs else git_blob_oid(content)
            answers.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return {"files": answers, "commitOid": current.oid}

    def _is_lfs(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern) for pattern in self.lfs_patterns)

    def _lfs_batch(self, payload: dict) -> dict:
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_objects:  # already stored objects get no actions: nothing to send
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs/upload/{obj['oid']}?signature={self._signature}"},
                    "verify": {"href": f"{self.url}/lfs/verify"},
                }
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _commit(self, repo: Repo, branch: str, body: bytes):
        if self.refuse_commits:
            raise HubError(403, self.refuse_commits)
        if branch not in repo.branches:
            raise HubError(404, f"Branch {branch} not found in {repo.repo_id}", "RevisionNotFound")
        files = dict(repo.resolve(branch).files)
        lfs_paths = set(repo.resolve(branch).lfs_paths)
        message = ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs_paths.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = self.lfs_objects[value["oid"]]
                lfs_paths.add(value["path"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"The test Hub server does not support commit operation {key!r}")
        commit = repo.add_commit(branch, message, files, lfs_paths)
        return _json(
            {"commitUrl": f"{self.url}/{repo.repo_id}/commit/{commit.oid}", "commitOid": commit.oid, "success": True}
        )

    # ------------------------------------------------------------------ download

    def _info(self, repo: Repo, revision: str) -> dict:
        commit = self._commit_at(repo, revision)
        return {
            "_id": repo.repo_id,
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created_at,
            "lastModified": repo.created_at,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> list[dict]:
        commit = self._commit_at(repo, revision)
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            # Folders on the way to the file (only the first one unless recursive).
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder_path = prefix + "/".join(parts[:depth])
                entries[folder_path] = {
                    "type": "directory",
                    "oid": git_blob_oid(folder_path.encode()),
                    "path": folder_path,
                }
            if recursive or len(parts) == 1:
                entries[path] = self._file_entry(commit, path)
        if prefix and not entries:
            raise HubError(404, f"{folder} not found at {revision}", "EntryNotFound")
        return list(entries.values())

    def _file_entry(self, commit: Commit, path: str) -> dict:
        content = commit.files[path]
        entry = {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": path}
        if path in commit.lfs_paths:
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry

    def _resolve(self, repo: Repo, revision: str, path: str, request_headers, method: str):
        commit = self._commit_at(repo, revision)
        if path not in commit.files:
            raise HubError(404, f"{path} not found in {repo.repo_id} at {revision}", "EntryNotFound")
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if path in commit.lfs_paths:
            # The Hub tells LFS files by these headers (and redirects to a CDN, which this server does not).
            headers["X-Linked-Etag"] = headers["ETag"] = f'"{hashlib.sha256(content).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(content))
        else:
            headers["ETag"] = f'"{git_blob_oid(content)}"'
        status = 200
        byte_range = request_headers.get("Range", "")
        if method == "GET" and byte_range.startswith("bytes="):  # resumed downloads ask for the rest
            start, _, end = byte_range[len("bytes=") :].partition("-")
            start, end = int(start or 0), int(end) if end else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        return status, headers, content


def _json(payload) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 30  # an idle keep-alive connection closes by itself

    def log_message(self, format, *args) -> None:
        pass  # requests are recorded in HubServer.requests instead of printed

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # file uploads stream their body
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        body = self._read_body() if method in ("POST", "PUT") else b""
        try:
            status, headers, content = self.server.hub.handle(method, self.path, self.headers, body)
        except HubError as error:
            status, content = error.status, json.dumps({"error": error.message, **error.extra}).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Error-Message": error.message.encode("ascii", "replace").decode(),
            }
            if error.code:
                headers["X-Error-Code"] = error.code
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(content)

    # http.server dispatches to do_<METHOD>.
    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")
