from cnnlab.backends import machine


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert machine.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert machine.cpu_flags(str(tmp_path / "missing")) == set()


def test_native_bfloat16_needs_a_bfloat16_instruction_set():
    assert machine.native_bfloat16({"avx512f", "avx512_bf16"})
    assert machine.native_bfloat16({"amx_bf16", "amx_tile"})
    assert not machine.native_bfloat16({"avx512f", "avx2"})
    assert not machine.native_bfloat16(set())


def test_accelerators_are_the_backends_non_cpu_devices(monkeypatch, capsys):
    from cnnlab.backends import Devices, current_engine

    assert machine.accelerators() == []  # this machine: CPU only, on whichever backend runs the tests
    engine = current_engine()
    monkeypatch.setattr(engine, "detect_devices", lambda: Devices("gpu", ("GPU:0", "GPU:1"), (8, 0)))
    assert machine.accelerators() == ["GPU:0", "GPU:1"]

    def broken_driver():
        raise RuntimeError("driver mismatch")

    monkeypatch.setattr(engine, "detect_devices", broken_driver)
    assert machine.accelerators() == []
    assert "could not list accelerators (driver mismatch)" in capsys.readouterr().err
