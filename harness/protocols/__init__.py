"""Protocols: how a Sample becomes requests and the results a Score, one module per task family.

base (Protocol, PromptContext, the PROTOCOLS registry), formats (prompt formats), extract
(answer extractors); families: mcqa (loglik, loglik_text, generate), reasoning (cot, sc@K, voc),
textgen (notes, dialogue turns), ner, interactive (MediQ-style consultation; patients holds its
simulated patients), pqa (proactive questioning on real dialogues), lmeval (lm-eval's own tasks,
`lm_eval:NAME`), sft (the label wrapper of `--protocol sft`). Each family registers its formats,
adapters, protocols and metrics where it defines them."""

from harness.protocols.base import PROTOCOLS, PromptContext, Protocol
from harness.protocols.extract import EXTRACTORS
from harness.protocols.formats import FORMATS, PromptFormat

__all__ = ["EXTRACTORS", "FORMATS", "PROTOCOLS", "PromptContext", "PromptFormat", "Protocol"]
