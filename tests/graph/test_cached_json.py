"""trace_cache.cached_json: the one disk (and in-process) cache of traced graphs."""

from __future__ import annotations

import json

from accelsim.graph.trace_cache import cached_json


def test_cached_json_builds_once_reads_back_and_rebuilds_a_damaged_entry(tmp_path):
    path = tmp_path / "sub" / "key.json"
    built: list[int] = []

    def build() -> dict:
        built.append(1)
        return {"value": len(built)}

    def load(data: dict) -> dict:
        return {"value": data["value"]}

    assert cached_json(path, load, build, json.dumps) == {"value": 1}
    assert json.loads(path.read_text()) == {"value": 1}
    assert cached_json(path, load, build, json.dumps) == {"value": 1} and len(built) == 1
    path.write_text('{"other": 0}')  # damaged: load raises KeyError
    assert cached_json(path, load, build, json.dumps) == {"value": 2}
    assert json.loads(path.read_text()) == {"value": 2}
    memory: dict[str, dict] = {}
    assert cached_json(path, load, build, json.dumps, memory=memory) == {"value": 2}
    path.unlink()
    assert cached_json(path, load, build, json.dumps, memory=memory) == {"value": 2}
    assert memory == {"key": {"value": 2}} and len(built) == 2 and not path.exists()
