"""Result files say where and with what they were measured."""

from __future__ import annotations

import json

import faiss

from mrl.cpu import SIMD_FLAGS, cpu_info
from mrl.provenance import write_json


def test_result_provenance_names_cpu_simd_and_engines(tmp_path):
    path = write_json({"x": 1}, tmp_path / "r.json")
    machine = json.loads(path.read_text())["provenance"]["machine"]
    cpu = cpu_info()
    assert machine["cpu_model"] == cpu.model and machine["cpu_vendor"] == cpu.vendor_name
    assert set(machine["simd"]) <= set(SIMD_FLAGS)
    assert machine["engines"]["faiss-cpu"] == faiss.__version__
