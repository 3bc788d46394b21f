"""Content-addressed on-disk model store: weight blobs, manifests, name index, cached profiles.

Layout under `root` (every file written atomically: temp file + rename, so concurrent readers
never see half a file and two writers of the same content are harmless):
  blobs/<hh>/<hash>        raw bytes whose SHA-256 is <hash> (safetensors weights, tokenizer JSON)
  manifests/<model_id>     canonical manifest CBOR
  names/<name>             model id text for a human name (imported models, cached zoo builds)
  profiles/<model_id>.json cached cost profile (deterministic, so caching is safe)
Blobs are re-hashed on every read: a corrupted or tampered file raises WeightIntegrityError.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import platformdirs

from p2pinfer.errors import ModelError, UnknownModelError, WeightIntegrityError

from .manifest import Manifest, content_hash, is_hash

_INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_root() -> Path:
    """The per-user p2pinfer data directory (platformdirs), used when no --data-dir is given.

    The store only writes under blobs/, manifests/, names/ and profiles/, so a node may keep its
    other state (keys, ledger) in the same data directory.
    """
    return Path(platformdirs.user_data_dir("p2pinfer", appauthor=False))


def default_store() -> "ModelStore":
    return ModelStore(default_root())


def store_for(data_dir: Path | str | None) -> "ModelStore":
    """The store for a `--data-dir` value: that directory itself, or the default when None."""
    return ModelStore(data_dir) if data_dir is not None else default_store()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """Blobs and manifests by content hash. Safe to share between threads and processes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # -- blobs -----------------------------------------------------------------------------
    def _blob_path(self, blob_hash: str) -> Path:
        if not is_hash(blob_hash):
            raise ModelError(f"not a content hash: {blob_hash!r}")
        return self.root / "blobs" / blob_hash[:2] / blob_hash

    def has_blob(self, blob_hash: str) -> bool:
        return self._blob_path(blob_hash).is_file()

    def get_blob(self, blob_hash: str) -> bytes:
        """The blob's bytes, verified against its hash."""
        path = self._blob_path(blob_hash)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"blob {blob_hash[:16]}... is not in the store at {self.root}") from None
        if content_hash(data) != blob_hash:
            raise WeightIntegrityError(f"blob {blob_hash[:16]}... in {self.root} is corrupted (content hash mismatch)")
        return data

    def put_blob(self, blob_hash: str, data: bytes) -> None:
        """Store bytes under their hash; refuses bytes that do not hash to `blob_hash`."""
        actual = content_hash(data)
        if actual != blob_hash:
            raise WeightIntegrityError(f"blob content hashes to {actual[:16]}..., not the expected {blob_hash[:16]}...")
        self._write_blob(blob_hash, data)

    def add_blob(self, data: bytes) -> str:
        """Store bytes and return their hash."""
        blob_hash = content_hash(data)
        self._write_blob(blob_hash, data)
        return blob_hash

    def _write_blob(self, blob_hash: str, data: bytes) -> None:
        path = self._blob_path(blob_hash)
        if not path.is_file():
            _atomic_write(path, data)

    # -- manifests -------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest, *, name: str | None = None) -> str:
        """Store a manifest by id; returns its id.

        Only when `name` is given is it also indexed under that human name (imports and zoo
        builds do this). Manifests fetched from peers are stored by id only, so a peer cannot
        redirect a local model name to its own manifest.
        """
        _atomic_write(self.root / "manifests" / manifest.model_id, manifest.to_cbor())
        if name is not None:
            self.set_name(name, manifest.model_id)
        return manifest.model_id

    def get_manifest(self, model_id: str) -> Manifest:
        if not is_hash(model_id):
            raise UnknownModelError(f"not a model id: {model_id!r}")
        path = self.root / "manifests" / model_id
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UnknownModelError(f"model {model_id[:16]}... is not in the store at {self.root}") from None
        manifest = Manifest.from_cbor(data)
        if manifest.model_id != model_id:
            raise WeightIntegrityError(f"manifest file {path} does not hash to its name")
        return manifest

    def has_manifest(self, model_id: str) -> bool:
        return is_hash(model_id) and (self.root / "manifests" / model_id).is_file()

    def manifest_ids(self) -> list[str]:
        folder = self.root / "manifests"
        return sorted(p.name for p in folder.iterdir() if is_hash(p.name)) if folder.is_dir() else []

    # -- name index ------------------------------------------------------------------------
    def set_name(self, name: str, model_id: str) -> None:
        if not _INDEX_NAME_RE.match(name):
            raise ModelError(f"model name {name!r} must be letters, digits, '.', '_', '-'")
        _atomic_write(self.root / "names" / name, model_id.encode())

    def lookup_name(self, name: str) -> str | None:
        """The model id indexed under `name`, or None."""
        if not _INDEX_NAME_RE.match(name):
            return None
        path = self.root / "names" / name
        try:
            model_id = path.read_text().strip()
        except FileNotFoundError:
            return None
        return model_id if self.has_manifest(model_id) else None

    def names(self) -> dict[str, str]:
        folder = self.root / "names"
        if not folder.is_dir():
            return {}
        found = {p.name: self.lookup_name(p.name) for p in folder.iterdir() if not p.name.startswith(".")}
        return {name: mid for name, mid in sorted(found.items()) if mid}

    # -- cached profiles (opaque text owned by p2pinfer.models.profiling) ---------------------
    def read_profile_text(self, model_id: str) -> str | None:
        try:
            return (self.root / "profiles" / f"{model_id}.json").read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def write_profile_text(self, model_id: str, text: str) -> None:
        _atomic_write(self.root / "profiles" / f"{model_id}.json", text.encode())
