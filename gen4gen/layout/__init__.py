"""Layout planners (config group ``layout=heuristic|llm``).

A planner turns a ``PlanRequest`` (concepts with counts, canvas size, seed, sample index) into a
``Plan``: one box per instance, the paste order (back to front), 3 suggested scenes, the chosen
background prompt and optional real-world size ratios. ``plan_many`` plans a whole run at once
(the LLM planner sends every request concurrently); ``config`` is what the layouts depend on.
"""
from __future__ import annotations

from typing import Protocol

from gen4gen.layout.schema import ConceptCount, Plan, PlacedBox, PlanRequest


class Planner(Protocol):
    name: str

    def plan(self, request: PlanRequest) -> Plan: ...

    def plan_many(self, requests: list[PlanRequest]) -> list[Plan]: ...

    def config(self) -> dict: ...


__all__ = ["Planner", "PlanRequest", "ConceptCount", "Plan", "PlacedBox"]
