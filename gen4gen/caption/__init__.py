"""s4 captioners: ``template`` (embedded, grounded in layout.json), ``llm`` and ``vlm`` (OpenAI-compatible)."""
