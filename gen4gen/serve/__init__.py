"""``stage=serve``: a local web app to review the dataset, read a bench leaderboard and search models.

``review`` (the decisions file, also read by the export) needs no web framework; the app itself
(``app``, ``api``) is FastAPI + uvicorn and loads only when the stage runs.
"""
