"""Test helpers, one folder: ``tree``/``trees`` write stage folders through the real artefact models; tiny models
(``bench_tiny``, ``tiny_inpaint``, ``train_tiny``, ``clip_tokenizer``), the local LLM server (``llm_server``,
``s2_llm_replies``), the CLI in a subprocess (``pipeline_run``), test-only backends (``segmenters``,
``fake_torchvision``), image cases, and ``needs`` (what a test needs that a checkout may lack)."""
