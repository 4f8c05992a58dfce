from cnnlab import system_info


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert system_info.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert system_info.cpu_flags(str(tmp_path / "missing")) == set()


def test_native_bfloat16_needs_a_bfloat16_instruction_set():
    assert system_info.native_bfloat16({"avx512f", "avx512_bf16"})
    assert system_info.native_bfloat16({"amx_bf16", "amx_tile"})
    assert not system_info.native_bfloat16({"avx512f", "avx2"})
    assert not system_info.native_bfloat16(set())
