"""The loopback Hub (tests/hub_server.py) driven by the real clients: huggingface_hub, datasets
and transformers, each run in a subprocess since huggingface_hub reads HF_ENDPOINT at import."""

from __future__ import annotations

import json
import textwrap

import pytest

from hub_server import DEFAULT_TOKENS, HubServer, hub_env, run_python, running_hub

WRITE = "hf_alice_write"

# A small conversational preference dataset shaped like shawhin/youtube-titles-dpo.
PREFS = {
    "train": [
        {
            "prompt": [{"role": "user", "content": f"Title a video about {topic}"}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
        }
        for topic, good, bad in [
            ("RAG", "RAG in 10 Minutes", "a video about retrieval augmented generation"),
            ("LoRA", "Fine-tune Any LLM with LoRA", "LoRA explained (long)"),
            ("DPO", "DPO: RLHF Without the RL", "direct preference optimization video"),
        ]
    ],
    "valid": [
        {
            "prompt": [
                {"role": "system", "content": "You write YouTube titles."},
                {"role": "user", "content": "Title a video about agents"},
            ],
            "chosen": [{"role": "assistant", "content": "AI Agents, Clearly Explained"}],
            "rejected": [{"role": "assistant", "content": "agents agents agents"}],
        }
    ],
}

PUSH_PREFS = """
from datasets import Dataset, DatasetDict
prefs = DatasetDict({split: Dataset.from_list(rows) for split, rows in DATA.items()})
info = prefs.push_to_hub("alice/prefs")
print(json.dumps({"commit": info.oid, "features": prefs["train"].features.to_dict()}))
"""

LOAD_PREFS = """
from datasets import load_dataset
loaded = load_dataset("alice/prefs")
out = {s: {"rows": d.to_list(), "features": d.features.to_dict()} for s, d in loaded.items()}
print(json.dumps(out))
"""

CATCH = """
def attempt(call):
    try:
        return {"ok": call()}
    except Exception as error:
        response = getattr(error, "response", None)
        return {
            "error": type(error).__name__,
            "status": getattr(response, "status_code", None),
            "message": str(error),
        }
"""


def _python(code: str, env: dict[str, str], data=None) -> dict:
    """Run `code` (with `json`, `DATA` and `attempt` defined); its last stdout line is JSON."""
    prelude = f"import json\nDATA = json.loads({json.dumps(json.dumps(data))})\n{CATCH}\n"
    result = run_python(prelude + code, env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def hub(tmp_path):
    server = running_hub(tmp_path, DEFAULT_TOKENS)
    yield server
    server.stop()
    assert server.errors == []
    logged = repr(server.request_log)
    assert not any(token in logged for token in DEFAULT_TOKENS)


def test_whoami_answers_for_a_good_token_and_401_for_a_bad_one(hub, tmp_path):
    code = """
from huggingface_hub import HfApi
api = HfApi()
me = api.whoami(token="hf_alice_write")
print(json.dumps({
    "me": [me["name"], me["type"], me["auth"]["accessToken"]["role"], me["orgs"]],
    "display": me["auth"]["accessToken"]["displayName"],
    "read": api.whoami(token="hf_alice_read")["auth"]["accessToken"]["role"],
    "bad": attempt(lambda: api.whoami(token="hf_not_a_token")),
}))
"""
    out = _python(code, hub_env(hub, cache_dir=tmp_path))
    assert out["me"] == ["alice", "user", "write", []]
    assert out["display"]
    assert out["read"] == "read"
    assert out["bad"]["error"] == "HfHubHTTPError" and out["bad"]["status"] == 401


def test_dataset_push_load_and_push_again(hub, tmp_path):
    pushed = _python(PUSH_PREFS, hub_env(hub, WRITE, cache_dir=tmp_path / "push"), PREFS)
    files = hub.repo_files("dataset", "alice/prefs")
    parquet = sorted(path for path in files if path.endswith(".parquet"))
    assert [p.split("/")[0] for p in parquet] == ["data", "data"] and "README.md" in files
    head = hub.commits("dataset", "alice/prefs")[-1]
    assert head["oid"] == pushed["commit"]
    assert all(head["files"][path]["lfs"] for path in parquet)
    assert not head["files"]["README.md"]["lfs"]

    # Loaded in a fresh cache without a token (the repo is public).
    first_load = _python(LOAD_PREFS, hub_env(hub, cache_dir=tmp_path / "load1"))
    # The same DatasetDict again: succeeds without a new commit, and loads the same.
    again = _python(PUSH_PREFS, hub_env(hub, WRITE, cache_dir=tmp_path / "push"), PREFS)
    second_load = _python(LOAD_PREFS, hub_env(hub, cache_dir=tmp_path / "load2"))
    commits = hub.commits("dataset", "alice/prefs")
    assert [c["title"] for c in commits] == ["initial commit", "Upload dataset"]
    assert again["commit"] == pushed["commit"] == commits[-1]["oid"]
    assert hub.repo_files("dataset", "alice/prefs") == files
    for loaded in (first_load, second_load):
        assert {split: loaded[split]["rows"] for split in loaded} == PREFS
        for split in PREFS:
            assert loaded[split]["features"] == pushed["features"]
    puts = [entry for entry in hub.request_log if entry[0] == "PUT"]
    assert len(puts) == len(parquet) and not any(had_auth for _, _, had_auth in puts)


def test_tiny_model_push_and_from_pretrained_in_a_fresh_cache(hub, tmp_path):
    code = f"""
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM
torch.manual_seed(0)
config = Qwen2Config(vocab_size=64, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
                     num_hidden_layers=1, intermediate_size=32)
model = Qwen2ForCausalLM(config)
model.push_to_hub("alice/tiny")
fresh = Path({str(tmp_path / "fresh")!r})
loaded = AutoModelForCausalLM.from_pretrained("alice/tiny", cache_dir=fresh)
mine, theirs = model.state_dict(), loaded.state_dict()
print(json.dumps({{
    "keys": sorted(mine) == sorted(theirs),
    "same": all(torch.equal(mine[k], theirs[k]) for k in mine),
    "class": type(loaded).__name__,
    "cached": sorted(p.name for p in fresh.rglob("*") if p.is_file() and "snapshots" in p.parts),
}}))
"""
    out = _python(code, hub_env(hub, WRITE, cache_dir=tmp_path / "cache"))
    assert out["keys"] and out["same"] and out["class"] == "Qwen2ForCausalLM"
    assert {"config.json", "model.safetensors"} <= set(out["cached"])
    files = hub.commits("model", "alice/tiny")[-1]["files"]
    assert files["model.safetensors"]["lfs"] and not files["config.json"]["lfs"]


def test_writes_need_a_write_token_in_ones_own_namespace(hub, tmp_path):
    hub.seed_repo("model", "bob/public", {"README.md": b"bob's model\n"})
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.bin").write_bytes(bytes(range(256)))
    code = f"""
from huggingface_hub import HfApi
def push(token, repo_id):
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(folder_path={str(folder)!r}, repo_id=repo_id).oid
print(json.dumps({{
    "read_token": attempt(lambda: push("hf_alice_read", "alice/ro")),
    "bob_new": attempt(lambda: push("hf_alice_write", "bob/new")),
    "bob_public": attempt(lambda: push("hf_alice_write", "bob/public")),
    "no_token": attempt(lambda: push(None, "alice/anon")),
    "own": attempt(lambda: push("hf_alice_write", "alice/ok")),
}}))
"""
    out = _python(code, hub_env(hub, cache_dir=tmp_path / "cache"))
    assert out["read_token"]["status"] == 403
    assert "'read' role" in out["read_token"]["message"]
    for case in ("bob_new", "bob_public"):
        assert out[case]["status"] == 403, out[case]
        assert "cannot write to 'bob'" in out[case]["message"]
    assert out["no_token"]["status"] == 401 and "error" in out["no_token"]
    assert out["own"]["ok"] == hub.commits("model", "alice/ok")[-1]["oid"]
    assert not hub.repo_exists("model", "alice/ro")
    assert not hub.repo_exists("model", "bob/new")
    assert not hub.repo_exists("model", "alice/anon")
    assert len(hub.commits("model", "bob/public")) == 2  # initial + seed: untouched


def test_hub_unreachable_mid_push_then_the_retry_completes(hub, tmp_path):
    env = hub_env(hub, WRITE, cache_dir=tmp_path / "push")
    push = f"def push():\n{textwrap.indent(PUSH_PREFS, '    ')}\nprint(json.dumps(attempt(push)))"
    hub.stop_on_request("POST", "/commit/")  # the shards are uploaded, the commit gets no answer
    cut = _python(push, env, PREFS)
    assert cut.get("error") in ("RemoteProtocolError", "ReadError", "ConnectError"), cut
    assert not hub.running
    assert len(hub.commits("dataset", "alice/prefs")) == 1  # created, nothing committed

    down = _python(push, env, PREFS)
    assert down["error"] == "ConnectError", down

    uploads_before = sum(1 for entry in hub.request_log if entry[0] == "PUT")
    assert uploads_before == 2  # both parquet shards reached the LFS store before the cut
    hub.start()
    done = _python(push, env, PREFS)
    assert done == {"ok": None}
    assert sum(1 for entry in hub.request_log if entry[0] == "PUT") == uploads_before  # reused
    loaded = _python(LOAD_PREFS, hub_env(hub, cache_dir=tmp_path / "load"))
    assert {split: loaded[split]["rows"] for split in loaded} == PREFS

    # The repos live in the storage folder: a new server on it serves the same commits.
    again = HubServer(hub.storage, DEFAULT_TOKENS)
    assert again.commits("dataset", "alice/prefs") == hub.commits("dataset", "alice/prefs")


def test_a_private_repo_is_not_found_without_its_owners_token(hub, tmp_path):
    code = """
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo("alice/secret", private=True, token="hf_alice_write")
api.upload_file(path_or_fileobj=b"secret notes", path_in_repo="notes.txt",
                repo_id="alice/secret", token="hf_alice_write")
def read(token):
    path = hf_hub_download("alice/secret", "notes.txt", token=token)
    return open(path).read()
print(json.dumps({
    "anonymous": attempt(lambda: read(None)),
    "info": attempt(lambda: api.model_info("alice/secret").id),
    "bob": attempt(lambda: read("hf_bob_write")),
    "alice_read_token": attempt(lambda: read("hf_alice_read")),
}))
"""
    out = _python(code, hub_env(hub, cache_dir=tmp_path))
    for case in ("anonymous", "info", "bob"):
        assert out[case]["error"] == "RepositoryNotFoundError", out[case]
        assert out[case]["status"] == 404
    assert out["alice_read_token"] == {"ok": "secret notes"}


def test_revisions_trees_ranges_and_commit_checks(hub, tmp_path):
    code = """
import base64
from huggingface_hub import CommitOperationAdd, HfApi, HfFileSystem, hf_hub_download, hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session
api = HfApi(token="hf_alice_write")
api.create_repo("alice/lab")
first = api.upload_file(path_or_fileobj=b"one", path_in_repo="docs/notes/a.txt",
                        repo_id="alice/lab").oid
api.upload_file(path_or_fileobj=b"two", path_in_repo="docs/notes/a.txt", repo_id="alice/lab")
blob = bytes(range(256)) * 40
api.upload_file(path_or_fileobj=blob, path_in_repo="docs/data.bin", repo_id="alice/lab")
def text(**kwargs):
    return open(hf_hub_download("alice/lab", "docs/notes/a.txt", **kwargs)).read()
def entries(items):
    return sorted([item.path, type(item).__name__] for item in items)
url = hf_hub_url("alice/lab", "docs/data.bin")
ranged = get_session().get(url, headers={**build_hf_headers(), "Range": "bytes=10-19"})
with HfFileSystem().open("alice/lab/docs/data.bin", "rb", block_size=64) as handle:
    handle.seek(1000)
    chunk = handle.read(8)
fake = "0" * 64
ndjson = "\\n".join(json.dumps(line) for line in [
    {"key": "header", "value": {"summary": "no upload"}},
    {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": fake, "size": 3}},
])
commit_url = api.endpoint + "/api/models/alice/lab/commit/main"
ndjson_headers = {**build_hf_headers(token=api.token), "Content-Type": "application/x-ndjson"}
unuploaded = get_session().post(commit_url, content=ndjson.encode(), headers=ndjson_headers)
stale = CommitOperationAdd(path_in_repo="x.txt", path_or_fileobj=b"x")
print(json.dumps({
    "first": first,
    "old": text(revision=first), "new": text(),
    "unknown_revision": attempt(lambda: text(revision="nope")),
    "missing_file": attempt(lambda: hf_hub_download("alice/lab", "nope.txt")),
    "missing_repo": attempt(lambda: hf_hub_download("alice/nothing", "a.txt")),
    "root": entries(api.list_repo_tree("alice/lab")),
    "nested": entries(api.list_repo_tree("alice/lab", path_in_repo="docs/notes")),
    "recursive": entries(api.list_repo_tree("alice/lab", recursive=True)),
    "missing_folder": attempt(lambda: list(api.list_repo_tree("alice/lab", path_in_repo="zz"))),
    "paths": entries(api.get_paths_info("alice/lab", ["docs", "docs/data.bin", "nope"])),
    "lfs": api.get_paths_info("alice/lab", ["docs/data.bin"])[0].lfs is not None,
    "range": [ranged.status_code, ranged.headers["Content-Range"], ranged.content == blob[10:20]],
    "fs_read": chunk == blob[1000:1008],
    "unuploaded": [unuploaded.status_code, unuploaded.headers.get("X-Error-Message")],
    "stale": attempt(lambda: api.create_commit("alice/lab", [stale], commit_message="late",
                                               parent_commit=first).oid),
    "exists": attempt(lambda: api.create_repo("alice/lab").repo_id),
    "exist_ok": api.create_repo("alice/lab", exist_ok=True).repo_id,
    "titles": [c.title for c in api.list_repo_commits("alice/lab")],
    "deleted": attempt(lambda: api.delete_folder("docs/notes", repo_id="alice/lab").oid),
}))
"""
    out = _python(code, hub_env(hub, cache_dir=tmp_path))
    assert (out["old"], out["new"]) == ("one", "two")
    assert out["unknown_revision"]["error"] == "RevisionNotFoundError"
    assert out["missing_file"]["error"] in ("EntryNotFoundError", "RemoteEntryNotFoundError")
    assert out["missing_repo"]["error"] == "RepositoryNotFoundError"
    assert out["root"] == [[".gitattributes", "RepoFile"], ["docs", "RepoFolder"]]
    assert out["nested"] == [["docs/notes/a.txt", "RepoFile"]]
    assert out["recursive"] == [
        [".gitattributes", "RepoFile"],
        ["docs", "RepoFolder"],
        ["docs/data.bin", "RepoFile"],
        ["docs/notes", "RepoFolder"],
        ["docs/notes/a.txt", "RepoFile"],
    ]
    assert out["missing_folder"]["status"] == 404
    assert out["paths"] == [["docs", "RepoFolder"], ["docs/data.bin", "RepoFile"]]
    assert out["lfs"] is True
    assert out["range"] == [206, "bytes 10-19/10240", True]
    assert out["fs_read"] is True
    assert out["unuploaded"][0] == 400 and "never uploaded" in out["unuploaded"][1]
    assert out["stale"]["status"] == 412
    assert out["exists"]["status"] == 409 and out["exist_ok"] == "alice/lab"
    assert out["titles"][-1] == "initial commit" and len(out["titles"]) == 4
    assert out["deleted"]["ok"] == hub.commits("model", "alice/lab")[-1]["oid"]
    assert set(hub.repo_files("model", "alice/lab")) == {".gitattributes", "docs/data.bin"}
    assert hub.repo_files("model", "alice/lab", out["first"])["docs/notes/a.txt"] == b"one"
