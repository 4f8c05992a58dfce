import os

from cnnlab.common.cores import usable_cores


def test_usable_cores_are_the_affinity_where_the_system_has_one(monkeypatch):
    # a container or `taskset` may allow fewer cores than the machine has: pools are sized by what the process gets
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cores() == 2


def test_usable_cores_are_every_core_on_systems_without_affinity(monkeypatch):
    # macOS and Windows have no os.sched_getaffinity
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert usable_cores() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable", as os.cpu_count may say
    assert usable_cores() == 1
