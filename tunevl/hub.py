"""Share bundles on the Hugging Face Hub: ``push`` uploads a bundle with a generated model card.

Pulling is :func:`tunevl.load` with a repo id (``tunevl.adapters.bundle`` downloads the
bundle's safetensors and metadata only). The token comes from ``HF_TOKEN`` or the user's
``hf auth login``; tunevl never writes it anywhere, logs it, or puts it in an error message.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from tunevl.adapters.bundle import EXTRAS_FILE, META_FILE, RECIPE_FILE, read_meta
from tunevl.adapters.card import is_generated, is_portable, make_card
from tunevl.errors import BundleError

log = logging.getLogger("tunevl")

# Top-level bundle files that travel to the Hub. Training leftovers (checkpoint-*/, logs/,
# DeepSpeed states, which are pickles) never do.
_UPLOAD_SUFFIXES = (".safetensors", ".json", ".yaml", ".md")
_UPLOAD_NAMES = ("loss_curve.png",)
_MANAGED = {"adapter_config.json", "adapter_model.safetensors", EXTRAS_FILE, META_FILE, RECIPE_FILE, "metrics.json",
            "loss_curve.png", "README.md"}


class HubError(BundleError):
    """The Hub refused or failed a request (no token, rejected token, no permission, missing repo)."""


def bundle_files(bundle: Path) -> list[Path]:
    """The files of ``bundle`` that a push uploads (top level only)."""
    return sorted(
        p for p in bundle.iterdir()
        if p.is_file() and (p.suffix in _UPLOAD_SUFFIXES or p.name in _UPLOAD_NAMES)
    )


def _api(token: str | None):
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return HfApi(token=token)


@contextmanager
def _hub_call(what: str):
    """Turn huggingface_hub and transport errors (which never carry the token) into one-line ``HubError``s."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except RevisionNotFoundError as err:
        raise HubError(f"{what}: no such revision") from err
    except RepositoryNotFoundError as err:
        raise HubError(f"{what}: no such repo on {constants.ENDPOINT}, or your token cannot write to it") from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubError(f"{what}: the Hub rejected the token (401); set a valid HF_TOKEN or run `hf auth login`") from err
        if status == 403:
            raise HubError(f"{what}: the token may not write there (403); check its permissions and the namespace") from err
        server = (err.server_message or "").strip().splitlines()
        raise HubError(f"{what}: HTTP {status}" + (f": {server[0]}" if server else "")) from err
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore", "httpcore2"):
            raise
        raise HubError(f"{what}: cannot reach {constants.ENDPOINT} ({err.__class__.__name__})") from err


def push(
    bundle: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a bundle to a Hub model repo, creating the repo (and branch) if needed.

    The card (README.md) is regenerated for ``repo_id`` unless the bundle holds a card the user
    wrote. Bundle files from an earlier push that this bundle no longer has are deleted.

    Args:
        bundle: The bundle folder (a run's ``train.output_dir``).
        repo_id: ``user/name``; a bare ``name`` goes to the token owner's namespace.
        private: Create the repo private (an existing repo keeps its visibility).
        revision: Branch to push to (created from ``main`` if missing); default ``main``.
        commit_message: Default: ``"Upload tunevl bundle"``.
        license: Hub license id for the card; default ``other`` (the base model's license).
        token: A Hub token; default ``HF_TOKEN`` or the stored login.

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    bundle = Path(bundle)
    if not bundle.is_dir():
        raise HubError(f"{bundle}: no such bundle folder")
    meta = read_meta(bundle)
    _check_weights(bundle, meta)
    base = meta["base_model"]["name_or_path"]
    if not is_portable(base):
        log.warning("the base model is the local folder %s: users of the repo must pass base_model= to tunevl.load "
                    "(the card says so)", base)
    api = _api(token)
    with _hub_call(repo_id):
        if "/" not in repo_id:
            repo_id = f"{api.whoami()['name']}/{repo_id}"
        else:
            api.whoami()  # a rejected token fails here, before anything is created
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        existing = set(api.list_repo_files(repo_id, revision=revision))

    ops, names = [], set()
    for path in bundle_files(bundle):
        if path.name == "README.md" and is_generated(path.read_text(errors="replace")):
            continue  # regenerated below, with the repo id in its usage snippets
        ops.append(CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)))
        names.add(path.name)
    if "README.md" not in names:
        card = make_card(bundle, repo_id=repo_id, license=license)
        ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        names.add("README.md")
    stale = sorted(f for f in existing - names if "/" not in f and (f in _MANAGED or f.endswith(".safetensors")))
    ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
    with _hub_call(repo_id):
        info = api.create_commit(repo_id, ops, commit_message=commit_message or "Upload tunevl bundle", revision=revision)
    log.info("pushed %s to %s (%d files%s): %s", bundle, repo_id, len(names),
             f", removed {len(stale)} stale" if stale else "", info.commit_url)
    return info.commit_url


def _check_weights(bundle: Path, meta: dict) -> None:
    """Refuse to push a bundle whose weights are missing (only safetensors ever travel)."""
    needed = (["adapter_model.safetensors"] if "lora" in meta.get("adapters", []) else []) + (
        [EXTRAS_FILE] if meta.get("extras") else []
    )
    for name in needed:
        if not (bundle / name).is_file():
            raise HubError(f"{bundle}: missing {name}; only safetensors weights are pushed")
