"""Typed settings of the model tools, ``search`` and ``route`` (gen4gen.settings reads the composed config through
them, with the start-up check): types and bounds only, every default is in the yaml."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")  # only the keys checked here


# a value given on the command line as a word or a number (search.query.text=7): a string, or null
Words = Annotated[str | None, BeforeValidator(lambda v: v if v is None else str(v))]


class _SearchIVF(_Section):
    min_models: int = Field(ge=1)
    nprobe: int = Field(ge=1)
    candidates: int = Field(ge=1)


class SearchQuery(_Section):
    text: Words
    image: Words
    sketch: Words
    model: Words
    weights: dict[str, float] | None


class SearchSettings(_Section):
    """``search``: where the index is, how it is built (all of it in the index's config hash) and how it answers."""
    index: Words
    index_dir: Words
    dataset_by: Literal["concept", "dataset"]  # an exported dataset as samples: one entry per concept, or one
    clip: Words
    minilm: Words
    moment: Literal["diag", "full", "lowrank"]
    rank: int = Field(ge=1)
    eps: float = Field(ge=0, lt=1)
    dtype: Literal["float32", "float16"]
    keep_raw: bool
    tau: float = Field(gt=0)
    top_k: int = Field(ge=1)
    rerank: int = Field(ge=1)
    ivf: _SearchIVF
    batch_size: int = Field(ge=1)
    query: SearchQuery


class RouteSettings(_Section):
    """``route``: the tables, the router and its baselines (everything here is in the report's config hash)."""
    train_dir: Words
    eval_dir: Words
    test_fraction: float = Field(gt=0, lt=1)
    score: Literal["nima", "clip"]
    target: str
    embedding: Literal["minilm", "clip", "tfidf"]
    clip: Words
    prompt_stats: bool
    lexical: bool
    predictor: Literal["ensemble", "ridge", "knn", "mlp", "classifier"]
    alpha: float = Field(gt=0)
    k: int = Field(ge=1)
    hidden: int = Field(ge=1)
    folds: int = Field(ge=2)
    cost: Literal["cems", "measured"]
    costs: dict[str, float | dict[str, float]] | None
    predict: Words
    seed: int
