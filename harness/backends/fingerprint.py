"""Content fingerprints of model folders. Hashing multi-GB weights is slow, so a digest is
memoised per (path, size, mtime) in the user cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.backends.models import cache_root

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".model")
_META_NAMES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "adapter_config.json")


def file_digest(path: Path) -> str:
    stat = path.stat()
    memo_key = hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()
    memo = cache_root() / "digests" / memo_key
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest)
    return digest


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the weights and the files that change outputs (config, tokenizer)."""
    parts = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES or path.name in _META_NAMES):
            parts[path.name] = file_digest(path)
    if not parts:
        raise FileNotFoundError(f"no model files in {folder}")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
