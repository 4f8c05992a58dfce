from cnnlab import system_info
from cnnlab.config import load_config
from cnnlab.models import build_model, resolve_precision


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


def test_auto_precision_follows_the_cpu_and_the_choice_is_kept_in_the_model(monkeypatch):
    import keras

    config = load_config("seed", {"cnn.conv_blocks": [[4]], "cnn.dense_units": [8]})
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(system_info, "native_bfloat16", lambda native=native: native)
        assert resolve_precision("auto") == expected
        model = build_model(config, 10)
        assert model.get_layer("block1_conv1").compute_dtype == expected
        assert model.get_layer("probabilities").compute_dtype == "float32"
        assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is left as it was
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
