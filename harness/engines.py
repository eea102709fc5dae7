"""Choosing an engine: the `Generator` that `EngineSettings` describe for a model.

Above both engine modules: `harness.generation` (the interface, the settings and the in-process
`HFGenerator`) and `harness.openai_engine` (OpenAI-compatible servers, and `vllm serve` started for
the model), which builds on the first.
"""

from __future__ import annotations

from typing import Any

from harness.generation import EngineSettings, HFGenerator


def make_generator(name_or_path: str, batch_size: int = 16, engine: EngineSettings | None = None,
                   device: str | None = None) -> Any:
    """The engine `engine` describes (default: `EngineSettings()`, the detected fastest in-process one)
    for the model `name_or_path`. Remote engines read the model's tokenizer locally (chat template,
    token ids); call `close()` when done (kind vllm: stops the server; it is also stopped at exit)."""
    settings = engine or EngineSettings()
    if settings.kind == "hf":
        return HFGenerator.from_name(name_or_path, batch_size=batch_size, device=device, engine=settings)
    from harness.models import load_tokenizer
    from harness.openai_engine import OpenAIGenerator, serve_model

    resolved = settings.resolved(device)
    if settings.kind == "openai":
        return OpenAIGenerator.from_settings(settings, load_tokenizer(name_or_path), resolved=resolved)
    return serve_model(name_or_path, settings, resolved=resolved)
