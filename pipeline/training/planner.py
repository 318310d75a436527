"""What a run has to do, in order, and which committed stages each stage reads.

Pure functions of the schedule, the network's stages and what is committed: no Spark, no storage.
"""
from __future__ import annotations

from collections.abc import Iterable

from sparkcnn.pipeline import stage_keys
from sparkcnn.schemas.network import Network, StageDef


def plan(schedule: stage_keys.Schedule | None, committed_stages: tuple[str, ...], committed: Iterable[str]) -> list[str]:
    """Every stage key still to run or already run, in order, given the stages of an iteration that the
    mode commits. Before ingest there is no schedule: only the setup stages. An iteration whose update is
    committed (in whatever mode it ran) needs none of its other stages."""
    if schedule is None:
        return list(stage_keys.SETUP_STAGES)
    finished = {k.split(".")[0] for k in committed if k.endswith(".update")}
    return [k for k in schedule.plan(committed_stages) if k.endswith(".update") or k.split(".")[0] not in finished]


def next_stage(planned: list[str], committed: Iterable[str]) -> str | None:
    done = set(committed)
    return next((k for k in planned if k not in done), None)


def sources(schedule: stage_keys.Schedule, t: int) -> dict[str, str]:
    """The stage keys behind the non-stage sources of iteration t: its epoch's batches and the parameters it starts from."""
    return {"batches": stage_keys.batches_key(schedule.epoch_of(t)), "params": stage_keys.params_key(t, schedule.start_iteration)}


def source_key(schedule: stage_keys.Schedule, t: int, source: str) -> str:
    """The stage key a stage input of iteration t reads."""
    return sources(schedule, t).get(source, stage_keys.iteration_key(t, source))


def dependencies(sdef: StageDef, schedule: stage_keys.Schedule, t: int) -> list[str]:
    """The stage keys a stage of iteration t reads (its parameters included)."""
    keys = {source_key(schedule, t, i.source) for i in sdef.inputs.values()}
    if sdef.uses_params:
        keys.add(sources(schedule, t)["params"])
    return sorted(keys)


def written_policies(network: Network, stage: str, t: int, entries: dict[str, dict]) -> dict[str, dict]:
    """The cache policy each stage before `stage` in iteration t was written with, from committed entries by key."""
    stages = network.iteration_stages
    written = {}
    for source in stages[:stages.index(stage)]:
        entry = entries.get(stage_keys.iteration_key(t, source))
        if entry is not None and "cache" in entry:
            written[source] = entry["cache"]
    return written


def whole_iteration_dependencies(schedule: stage_keys.Schedule, t: int) -> list[str]:
    """What an iteration run whole (memory and fused modes) reads: its batches and starting parameters."""
    return sorted(sources(schedule, t).values())
