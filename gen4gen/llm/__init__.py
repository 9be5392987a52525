"""One client for every LLM backend (s2 planner, s4 captioners): any OpenAI-compatible endpoint. ``client``
(requests, retries, redaction), ``health`` (is the server there), ``cache`` (replies by request hash), ``replies``
(requests, results and reading a reply as data)."""
