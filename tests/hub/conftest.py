"""A Hub-compatible HTTP server in a thread, and trained bundles of every adapter kind and family.

``FakeHub`` keeps repos in memory (branches -> commits -> files) and answers the routes
huggingface_hub 2.x uses for ``create_repo``, ``create_branch``, ``create_commit``,
``list_repo_files``, ``snapshot_download`` and ``hf_hub_download`` (see PITFALLS.md, "Hub
without internet"). The ``hub`` fixture points huggingface_hub at it: the endpoint is a
module constant read at import, and this suite may import huggingface_hub before any
environment variable could be set, so the constants (and the module-level ``HfApi`` that
functions like ``file_exists`` are bound to) are patched as well as ``HF_ENDPOINT``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import torch

FAKE_TOKEN = "hf_tunevlFakeToken0123456789abcdef"
USER = "tester"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """In-memory Hub state; every handler reads and writes it under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.repos: dict[str, dict] = {}  # id -> {"private", "branches": {name: sha}, "commits": {sha: {path: bytes}}}
        self.log: list[str] = []  # "METHOD path" of every request
        self.seen_auth: list[str] = []  # Authorization headers, to check the token is only ever sent, never stored

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["branches"].get(revision, revision)]

    def _commit(self, repo: dict, branch: str, files: dict[str, bytes]) -> str:
        sha = hashlib.sha1(repr((len(repo["commits"]), sorted(files.items()))).encode()).hexdigest()
        repo["commits"][sha] = files
        repo["branches"][branch] = sha
        return sha


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    # ---- plumbing ----------------------------------------------------------------------
    def _send(self, status: int, body=b"", headers: dict | None = None, head_only: bool = False):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None = None, message: str = "error", head_only: bool = False):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers, head_only)

    def _body(self) -> bytes:
        return self.body

    def _authed(self) -> bool | None:
        """True with the right token, None without a token, False with a wrong one."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        self.hub.seen_auth.append(auth)
        return auth == f"Bearer {FAKE_TOKEN}"

    def _repo(self, repo_id: str, write: bool, head_only: bool = False) -> dict | None:
        repo = self.hub.repos.get(repo_id)
        authed = self._authed()
        if authed is False:
            self._error(401, None, "Invalid credentials in Authorization header", head_only)
            return None
        if repo is None or (repo["private"] and not authed) or (write and not authed):
            self._error(404 if authed else 401, "RepoNotFound", "Repository not found", head_only)
            return None
        return repo

    def _rev(self, repo: dict, rev: str, head_only: bool = False) -> str | None:
        rev = unquote(rev)
        sha = repo["branches"].get(rev, rev if rev in repo["commits"] else None)
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", head_only)
        return sha

    # ---- routes --------------------------------------------------------------------------
    def do_HEAD(self):
        self._route("HEAD")

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str):
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        self.hub.log.append(f"{method} {url.path}")
        # Read the whole body first: an unread body would corrupt the next request on this connection.
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.hub.lock:
            try:
                self._dispatch(method, parts, parse_qs(url.query))
            except Exception as err:  # surface server bugs as 500s rather than hangs
                self._error(500, None, f"fake hub: {err!r}")

    def _dispatch(self, method: str, parts: list[str], query: dict):
        head = method == "HEAD"
        if parts[:2] == ["api", "whoami-v2"]:
            authed = self._authed()
            if not authed:
                return self._error(401, None, "Invalid credentials in Authorization header")
            return self._send(200, {"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token"}})
        if parts[:2] == ["api", "validate-yaml"]:
            return self._send(200, {"errors": [], "warnings": []})
        if parts[:3] == ["api", "repos", "create"]:
            return self._create_repo(json.loads(self._body() or b"{}"))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest or rest[0] == "revision":
                return self._repo_info(repo_id, rest[1] if len(rest) > 1 else "main")
            if rest[0] == "tree":
                return self._tree(repo_id, rest[1])
            if rest[0] == "branch" and method == "POST":
                return self._create_branch(repo_id, unquote(rest[1]), json.loads(self._body() or b"{}"))
            if rest[0] == "preupload":
                return self._preupload(repo_id, json.loads(self._body()))
            if rest[0] == "commit":
                return self._apply_commit(repo_id, unquote(rest[1]), self._body())
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(unquote(p) for p in parts[4:]), head)
        return self._error(404, None, f"fake hub: no route for {method} {self.path}", head)

    def _create_repo(self, payload: dict):
        authed = self._authed()
        if not authed:
            return self._error(401, None, "Invalid credentials in Authorization header")
        owner = payload.get("organization") or USER
        if owner != USER:
            return self._error(403, None, "You don't have the rights to create a model under this namespace")
        repo_id = f"{owner}/{payload['name']}"
        if repo_id in self.hub.repos:
            body = {"error": "You already created this model repo", "url": f"{self._base()}/{repo_id}"}
            return self._send(409, body, {"X-Error-Message": body["error"]})
        private = payload.get("private") or payload.get("visibility") == "private"
        repo = {"private": bool(private), "branches": {}, "commits": {}}
        self.hub._commit(repo, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        self.hub.repos[repo_id] = repo
        return self._send(200, {"url": f"{self._base()}/{repo_id}", "name": repo_id})

    def _base(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    def _repo_info(self, repo_id: str, rev: str):
        repo = self._repo(repo_id, write=False)
        if repo is None:
            return
        sha = self._rev(repo, rev)
        if sha is None:
            return
        siblings = [{"rfilename": p} for p in sorted(repo["commits"][sha])]
        return self._send(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"], "siblings": siblings})

    def _tree(self, repo_id: str, rev: str):
        repo = self._repo(repo_id, write=False)
        sha = repo is not None and self._rev(repo, rev)
        if not sha:
            return
        entries = [{"type": "file", "path": p, "size": len(d), "oid": _git_blob_id(d)} for p, d in sorted(repo["commits"][sha].items())]
        return self._send(200, entries)

    def _create_branch(self, repo_id: str, branch: str, payload: dict):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        if branch in repo["branches"]:
            return self._error(409, None, "Reference already exists")
        start = self._rev(repo, payload.get("startingPoint") or "main")
        if start is None:
            return
        repo["branches"][branch] = start
        return self._send(200, {})

    def _preupload(self, repo_id: str, payload: dict):
        if self._repo(repo_id, write=True) is None:
            return
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        return self._send(200, {"files": files})

    def _apply_commit(self, repo_id: str, rev: str, body: bytes):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        if rev not in repo["branches"]:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        files = dict(repo["commits"][repo["branches"][rev]])
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                return self._error(400, None, f"fake hub: unsupported commit item {key}")
        sha = self.hub._commit(repo, rev, files)
        return self._send(200, {"commitUrl": f"{self._base()}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True})

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool):
        repo = self._repo(repo_id, write=False, head_only=head)
        if repo is None:
            return
        sha = self._rev(repo, rev, head)
        if sha is None:
            return
        data = repo["commits"][sha].get(path)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", head)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob_id(data)}"', "Content-Type": "application/octet-stream"}
        return self._send(200, data, headers, head_only=head)


@pytest.fixture(scope="session")
def hub_server():
    """The running server and its state (shared by the session; tests use fresh repo names)."""
    state = FakeHub()
    handler = type("Handler", (_Handler,), {"hub": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    state.token = FAKE_TOKEN
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub(hub_server, monkeypatch, tmp_path):
    """Point huggingface_hub at the fake server, online, with ``FAKE_TOKEN`` and an empty cache."""
    from huggingface_hub import constants, hf_api

    url = hub_server.endpoint
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", url)  # the HfApi behind module-level functions (file_exists, ...)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    return hub_server


# ---- bundles of every adapter kind ----------------------------------------------------------
@dataclass(frozen=True)
class BundleKind:
    """One entry of the round-trip matrix: how its bundle is trained, and what its card and merge must show.

    Args:
        name: The test id (``family:adapters``; the CLIP kinds keep their short names).
        recipe: A shipped recipe; the run is shrunk to 2 steps on a tiny model.
        overrides: Recipe overrides on top of the shrinking ones.
        tags: Tags the card's front matter must hold.
        mentions: Strings the card's body must hold (adapter settings, data, a metric).
        merge_changes: Substrings of weight names that merging must change (LoRA targets, trained modules).
        merge_keeps: Substrings of weight names that merging must leave bit-identical.
    """

    name: str
    recipe: str
    overrides: dict
    tags: frozenset
    mentions: tuple
    merge_changes: tuple
    merge_keeps: tuple
    data: tuple = ()  # data.train / data.eval overrides; default: synthetic questions

    @property
    def generative(self) -> bool:
        return self.recipe.startswith("lvlm/")

    @property
    def classification(self) -> bool:
        """Prompt-learning recipes: few-shot classification data, trained on the class prompts."""
        return self.name.split(":")[-1].startswith(("coop", "cocoop", "vpt"))

    @property
    def embedder(self) -> bool:
        """An LVLM with embedding prompts (VladVA): ``tunevl.load`` gives embeddings, and generation too."""
        return "vladva" in self.recipe

    @property
    def pipeline(self) -> str:
        return "image-text-to-text" if self.generative and not self.embedder else "zero-shot-image-classification"

    @property
    def slug(self) -> str:
        """The name as a repo or folder name: ``qwen2_vl:soft_prompt+lora`` -> ``qwen2_vl-soft_prompt-lora``."""
        return re.sub(r"[^\w.-]+", "-", self.name)

    def inputs(self):
        """The fixed probe inputs: ``(images, texts)`` for dual encoders and embedders; for LVLMs two one-image
        conversations of different lengths (so a batch has padding)."""
        if self.generative and not self.embedder:
            return self.conversations()
        from tunevl.data.synthetic import SyntheticShapes

        ds = SyntheticShapes(num_samples=6, split="eval")
        return [ds[i]["image"] for i in range(6)], [ds[i]["text"] for i in range(6)]

    @staticmethod
    def conversations():
        """Two one-image conversations of different lengths (what a generative model is probed with)."""
        from tunevl.data.synthetic_vqa import SyntheticVQA

        ds = SyntheticVQA(4, split="eval")
        return [ds[1], ds[2]]

    def recipe_overrides(self, out: Path, tiny_clip_path: str, quick) -> list[str]:
        extra = {"train.eval_at_start": "false", **self.overrides}
        if self.classification:  # few_shot over a labelled source, as shipped; the recipes read your split file
            items = {"model.name_or_path": tiny_clip_path, "train.output_dir": str(out), "train.max_steps": 2,
                     "train.progress_bar": "false", "train.per_device_train_batch_size": 4, "train.save_steps": 0,
                     "train.dataloader_num_workers": 0, "data.train.num_shots": 4, **extra}
            return [f"data.train.source={{_component_: synthetic_shapes, num_samples: 64, vary: {CLASS_TASK}}}",
                    f"data.eval={{_component_: synthetic_shapes, split: eval, num_samples: 16, vary: {CLASS_TASK}}}",
                    *(f"{k}={v}" for k, v in items.items())]
        if not self.generative:  # the quickstart, shrunk as tests/conftest.py's `quick` does
            return quick(extra.pop("model.name_or_path", tiny_clip_path), out, steps=2, **extra)
        if self.embedder:  # as tests/lvlm/test_vladva_recipes.py shrinks the VladVA recipes
            import sys

            sys.path.insert(0, str(Path(__file__).parents[1] / "lvlm"))
            from test_vladva_recipes import vladva_overrides

            return vladva_overrides(extra.pop("model.name_or_path"), out, steps=2, **extra)
        items = {  # as tests/lvlm/test_lvlm_recipes.py shrinks the LVLM recipes
            "train.output_dir": str(out), "train.max_steps": 2, "train.progress_bar": "false",
            "train.per_device_train_batch_size": 4, "train.save_steps": 0, "train.learning_rate": 1e-2,
            "train.warmup_ratio": 0.0, "data.train.num_samples": 16, "data.train.image_size": 32,
            "data.eval.num_samples": 4, "data.eval.image_size": 32, **extra,
        }
        synthetic = list(self.data) or ["data.train={_component_: synthetic_vqa, split: train}",  # the recipes read your JSONL
                                        "data.eval={_component_: synthetic_vqa, split: eval}"]
        return synthetic + [f"{k}={v}" for k, v in items.items()]

    # ---- probes: what a loaded bundle computes on fixed inputs ---------------------------------
    def outputs(self, model) -> dict:
        """Dual encoders: image/text embeddings, logit scale (and bias). LVLMs: log-probs of fixed
        conversations and greedily generated text."""
        view = model.view
        with torch.no_grad():
            if self.embedder:
                images, texts = self.inputs()
                return {"images": model.embed_images(images), "texts": model.embed_texts(texts),
                        "text": model.generate(images[:1], "How many circles?", max_new_tokens=6, min_new_tokens=4)}
            if self.generative:
                records = self.inputs()
                out = {"logps": view.sequence_logps(view.collate(records, {"messages"}))}
                out["text"] = model.generate(records[0]["images"], "How many circles?", max_new_tokens=6, min_new_tokens=4)
                return out
            images, texts = self.inputs()
            out = {"images": model.embed_images(images), "texts": model.embed_texts(texts), "scale": view.logit_scale(),
                   "classify": model.classify(images, CLASSNAMES)}  # with the learned prompts, when there are any
            if view.logit_bias() is not None:
                out["bias"] = view.logit_bias()
            return out

    def base_outputs(self, meta: dict) -> dict:
        """``outputs`` of the bundle's base model without any adapter."""
        from tunevl.models import ModelConfig, load_view

        base = meta["base_model"]
        view = load_view(ModelConfig(base["name_or_path"], family=meta["family"], processor_kwargs=base.get("processor_kwargs"),
                                     max_length=base.get("max_length")))
        view.model.eval()
        if meta.get("embedding_prompts"):  # the base model as an embedder: the handcrafted prompts
            from tunevl.adapters.embedding_prompts import apply_embedding_prompts

            apply_embedding_prompts(view, meta["embedding_prompts"])
        from tunevl.inference import for_view

        return self.outputs(for_view(view))

    @staticmethod
    def assert_same(got: dict, want: dict) -> None:
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert torch.equal(got[key], value) if isinstance(value, torch.Tensor) else got[key] == value, key


_CONTRAST = ("data.train={_component_: synthetic_contrast, split: train}",  # preference recipes: synthetic
             "data.eval={_component_: synthetic_contrast, split: eval}")    # minimal-contrast pairs
_CLIP_MERGE = dict(merge_changes=("self_attn.q_proj.weight",), merge_keeps=("mlp.fc1",))
_PROMPTS_ONLY = dict(merge_changes=(), merge_keeps=("text_model.", "vision_model."))  # prompts do not merge: no weight moves
CLASS_TASK = "count"  # synthetic classification data of the prompt-learning kinds
CLASSNAMES = ["one red circle", "three red circles", "a blue square"]
KINDS = [
    BundleKind("lora", "quickstart", {"model.train_logit_scale": "false"},
               frozenset({"tunevl", "clip", "lora", "peft", "contrastive"}), ("r=8", "synthetic_shapes", "i2t_R@1"), **_CLIP_MERGE),
    BundleKind("lora+logit_scale", "quickstart", {"model.train_logit_scale": "true"},
               frozenset({"tunevl", "clip", "lora", "contrastive"}), ("r=8", "synthetic_shapes", "i2t_R@1"), **_CLIP_MERGE),
    BundleKind("siglip:lora+scale_bias", "quickstart",
               {"model.name_or_path": "tiny-siglip", "model.train_logit_scale": "true", "objectives.0._component_": "sigmoid"},
               frozenset({"tunevl", "siglip", "lora", "sigmoid"}), ("r=8", "synthetic_shapes", "i2t_R@1"), **_CLIP_MERGE),
    BundleKind("coop", "clip/coop", {}, frozenset({"tunevl", "clip", "prompt-learning", "coop", "classification"}),
               ("num_tokens=16", "few_shot", "zeroshot_top1", "Few-shot:** 4 per class"), **_PROMPTS_ONLY),
    BundleKind("cocoop", "clip/cocoop", {}, frozenset({"tunevl", "clip", "prompt-learning", "cocoop", "classification"}),
               ("init_text=a photo of a", "base classes", "harmonic_mean"), **_PROMPTS_ONLY),
    BundleKind("vpt", "clip/vpt", {}, frozenset({"tunevl", "clip", "prompt-learning", "visual-prompt", "classification"}),
               ("num_tokens=8", "deep=True", "zeroshot_top1"), **_PROMPTS_ONLY),
    BundleKind("coop+lora", "clip/coop_lora", {}, frozenset({"tunevl", "clip", "lora", "prompt-learning", "coop"}),
               ("r=2", "init_text=a photo of a", "zeroshot_top1"), **_CLIP_MERGE),
    BundleKind("siglip:coop", "siglip/coop", {"model.name_or_path": "tiny-siglip"},
               frozenset({"tunevl", "siglip", "prompt-learning", "coop", "classification"}),
               ("num_tokens=16", "loss=sigmoid", "zeroshot_top1"), **_PROMPTS_ONLY),
    BundleKind("counting", "clip/count",
               {"data.train": "{_component_: synthetic_shapes, num_samples: 512}",  # the recipe reads your JSONL
                "data.eval": "{_component_: synthetic_shapes, split: eval, num_samples: 32}",
                "eval.benchmarks": "[{_component_: synthetic_counting, num_samples: 16}]", "train.learning_rate": 1e-3},
               frozenset({"tunevl", "clip", "lora", "contrastive", "counting"}),
               ("r=16", "counting (weight 0.5", "synthetic_counting/accuracy"), **_CLIP_MERGE),
    BundleKind("negclip", "clip/negclip",
               {"data.train": "{_component_: synthetic_binding, num_samples: 512, negatives: false}",
                "data.eval": "{_component_: synthetic_binding, split: eval, num_samples: 32}",
                "eval.benchmarks": "[{_component_: synthetic_binding, num_samples: 16}]", "train.learning_rate": 1e-3,
                "train.warmup_steps": 0},
               frozenset({"tunevl", "clip", "lora", "negclip"}), ("all-linear", "negclip (weight 1.0",
                                                                 "synthetic_binding/accuracy"),
               merge_changes=("self_attn.q_proj.weight", "mlp.fc1.weight"), merge_keeps=("embeddings.", "layer_norm")),
    BundleKind("llava:lora+projector", "lvlm/llava_sft_lora", {"model.name_or_path": "tiny-llava"},
               frozenset({"tunevl", "llava", "lora", "peft", "next_token"}), ("r=16", "synthetic_vqa", "accuracy"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "language_model.layers.1.mlp.down_proj",
                              "multi_modal_projector.linear_1"),
               merge_keeps=("vision_tower.", "embed_tokens", "lm_head")),
    BundleKind("qwen2_vl:soft_prompt+lora", "lvlm/qwen2_vl_soft_prompt_lora", {"model.name_or_path": "tiny-qwen2-vl"},
               frozenset({"tunevl", "qwen2_vl", "lora", "soft-prompt", "next_token"}), ("r=8", "synthetic_vqa", "accuracy"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "visual.blocks.1.attn.qkv"),
               merge_keeps=("language_model.layers.0.mlp", "visual.merger", "embed_tokens", "lm_head")),
    BundleKind("llava:svco+lora+projector", "lvlm/svco_llava", {"model.name_or_path": "tiny-llava"},
               frozenset({"tunevl", "llava", "lora", "peft", "svco"}), ("r=16", "synthetic_contrast", "accuracy"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "multi_modal_projector.linear_1"),
               merge_keeps=("vision_tower.", "embed_tokens", "lm_head"), data=_CONTRAST),
    BundleKind("qwen2_vl:dpo+lora", "lvlm/dpo_qwen2_vl", {"model.name_or_path": "tiny-qwen2-vl", "train.gradient_accumulation_steps": 1},
               frozenset({"tunevl", "qwen2_vl", "lora", "peft", "dpo"}), ("r=16", "synthetic_contrast", "accuracy"),
               merge_changes=("language_model.layers.1.self_attn.v_proj",),
               merge_keeps=("language_model.layers.0.mlp", "visual.", "embed_tokens", "lm_head"), data=_CONTRAST),
    BundleKind("qwen2_5_vl:lora", "lvlm/qwen2_5_vl_sft_lora", {"model.name_or_path": "tiny-qwen2.5-vl"},
               frozenset({"tunevl", "qwen2_5_vl", "lora", "peft", "next_token"}), ("r=16", "synthetic_vqa", "accuracy"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "language_model.layers.1.mlp.down_proj",
                              "visual.blocks.1.attn.qkv"),
               merge_keeps=("visual.merger", "visual.blocks.0.mlp", "embed_tokens", "lm_head")),
    BundleKind("qwen2_5_vl:qlora", "lvlm/qwen2_5_vl_qlora", {"model.name_or_path": "tiny-qwen2.5-vl"},
               frozenset({"tunevl", "qwen2_5_vl", "lora", "qlora", "peft", "next_token"}), ("r=16", "synthetic_vqa", "accuracy"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "language_model.layers.1.mlp.down_proj"),
               merge_keeps=("visual.", "embed_tokens", "lm_head")),
    BundleKind("idefics3:lora+projector", "lvlm/idefics3_sft_lora",
               {"model.name_or_path": "tiny-idefics3", "model.processor_kwargs.size": "{longest_edge: 64}"},
               frozenset({"tunevl", "idefics3", "lora", "peft", "next_token"}), ("r=16", "synthetic_vqa", "accuracy"),
               merge_changes=("text_model.layers.0.self_attn.q_proj", "text_model.layers.1.mlp.down_proj",
                              "connector.modality_projection"),
               merge_keeps=("vision_model.", "embed_tokens", "lm_head")),
    BundleKind("paligemma:lora", "lvlm/paligemma_sft_lora", {"model.name_or_path": "tiny-paligemma"},
               frozenset({"tunevl", "paligemma", "lora", "peft", "next_token"}), ("r=16", "synthetic_vqa", "accuracy"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "language_model.layers.1.mlp.down_proj"),
               merge_keeps=("vision_tower.", "multi_modal_projector", "embed_tokens")),
    BundleKind("llava:vladva+embedding_prompts+lora", "lvlm/vladva_llava", {"model.name_or_path": "tiny-llava"},
               frozenset({"tunevl", "llava", "lora", "soft-prompt", "vladva_contrastive", "vladva_captions"}),
               ("r=16", "synthetic_captions", "i2t_R@1", "Summary above image in one word:", "embed_images"),
               merge_changes=("language_model.layers.0.self_attn.q_proj", "language_model.layers.1.mlp.down_proj"),
               merge_keeps=("vision_tower.", "multi_modal_projector", "embed_tokens", "lm_head")),
]
# A new adapter kind or family joins the Hub round-trip matrix (push -> load, card, merge) by adding one entry.
BUNDLE_KINDS: dict[str, BundleKind] = {k.name: k for k in KINDS}


@pytest.fixture(params=list(BUNDLE_KINDS))
def kind(request) -> BundleKind:
    """Each adapter kind of the round-trip matrix."""
    return BUNDLE_KINDS[request.param]


@pytest.fixture(scope="session")
def _built_bundles() -> dict:
    return {}


@pytest.fixture
def bundle_of(tiny_clip_path, tmp_path_factory, quick, _built_bundles):
    """``bundle_of(kind) -> Path`` (a ``BundleKind`` or its name): a bundle trained for 2 steps, built once
    per kind per session.

    Tests must not modify it; copy it first (``shutil.copytree``).
    """
    import tunevl
    from tunevl.train.loop import run

    def get(kind: BundleKind | str) -> Path:
        kind = BUNDLE_KINDS[kind] if isinstance(kind, str) else kind
        if kind.name not in _built_bundles:
            out = tmp_path_factory.mktemp("bundles") / kind.slug
            recipe = tunevl.load_recipe(kind.recipe, kind.recipe_overrides(out, tiny_clip_path, quick))
            recipe.validate()
            run(recipe)
            _built_bundles[kind.name] = out
        return _built_bundles[kind.name]

    return get

