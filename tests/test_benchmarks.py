"""The benchmark scripts' own behaviour (their measurements live in benchmarks/RESULTS.md, not in tests)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_preset_seeds_stops_with_one_line_when_a_run_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "preset_seeds.py"), "--preset", "no-such-preset", "--data", str(tmp_path),
         "--seeds", "0", "1", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("preset_seeds: seed 0: cnnlab train failed")
    assert "seed 1" not in result.stdout + result.stderr


def test_vgg16_transfer_tabulates_finished_runs_without_retraining_them(tmp_path):
    """Finished runs under --out are read back (a long series runs in pieces): mean and sd over the seeds per arm,
    the wall time each run took, and the report's verdict for the first seed."""
    accuracies = {"pretrained": (0.80, 0.78), "random": (0.50, 0.54), "cnn": (0.70, 0.70)}
    for arm, (first, second) in accuracies.items():
        for seed, accuracy in ((0, first), (1, second)):
            run_dir = tmp_path / "quick" / f"{arm}-seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}))
            weights = {"pretrained": "w.h5", "random": "none"}
            model = ["--model", "vgg16", "--weights", weights[arm]] if arm in weights else ["--model", "cnn"]
            arguments = ["train", "--preset", "quick", "--data", "unused", "--seed", str(seed), "--out", str(run_dir),
                         *model]
            (run_dir / "benchmark_run.json").write_text(json.dumps({"arguments": arguments, "wall_minutes": 3 + seed}))
    report = tmp_path / "quick" / "report-seed0-pretrained-random-cnn"
    report.mkdir()
    (report / "report.md").write_text("# Report\n\nVGG16 reached 80.00% test accuracy against 50.00% for ...\n\nmore")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vgg16_transfer.py"), "--data", "unused", "--weights", "w.h5",
         "--presets", "quick", "--seeds", "0", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "| quick | VGG16 from the pretrained trunk | 0, 1 | 79.00 +- 1.41 | 3.5 |" in result.stdout
    assert "| quick | VGG16 from random weights | 0, 1 | 52.00 +- 2.83 | 3.5 |" in result.stdout
    assert "| quick | CNN from scratch | 0, 1 | 70.00 +- 0.00 | 3.5 |" in result.stdout
    assert "quick, seed 0, as `cnnlab report` says it: VGG16 reached 80.00% test accuracy against" in result.stdout


def test_preset_seeds_trains_again_where_the_finished_run_was_made_by_another_command(tmp_path):
    run_dir = tmp_path / "runs" / "seed-seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "train_seconds": 1, "test_seconds": 1}))
    arguments = ["train", "--preset", "seed", "--data", str(tmp_path), "--seed", "0", "--out", str(run_dir)]
    (run_dir / "benchmark_run.json").write_text(json.dumps({"arguments": arguments, "wall_minutes": 1.0}))
    reused = subprocess.run(
        [sys.executable, str(BENCHMARKS / "preset_seeds.py"), "--preset", "seed", "--data", str(tmp_path), "--seeds",
         "0", "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120,
    )
    assert reused.returncode == 0 and "seed 0: test accuracy 50.00%" in reused.stdout
    other = subprocess.run(  # float32 this time: not the run on disk, so cnnlab train is asked, and refuses the folder
        [sys.executable, str(BENCHMARKS / "preset_seeds.py"), "--preset", "seed", "--data", str(tmp_path), "--seeds",
         "0", "--out", str(tmp_path / "runs"), "--", "--set", "train.precision=float32"],
        capture_output=True, text=True, timeout=120,
    )
    assert other.returncode != 0 and "50.00%" not in other.stdout
    assert other.stderr.strip().splitlines()[-1].startswith("preset_seeds: seed 0: cnnlab train failed")


@pytest.mark.slow  # a TensorFlow server in its own process, loaded by clients for 2 s
def test_serve_load_reports_throughput_and_latency_with_no_errors(trained_run):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "serve_load.py"), str(trained_run), "--clients", "2", "--seconds", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "2 clients for 2 s" in lines[0]
    assert re.fullmatch(r"\d+ requests answered: [\d.]+ requests/s, latency p50 \d+ ms, p99 \d+ ms", lines[1])
    assert lines[2] == "errors: 0"


@pytest.mark.slow  # a minute of valid, hostile and slow clients against one server
def test_serve_soak_answers_every_request_keeps_health_up_and_gives_memory_back(trained_run):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "serve_soak.py"), str(trained_run), "--seconds", "60"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout
    requests, unanswered = map(int, re.search(r"requests: (\d+), without a status: (\d+)", said).groups())
    asked, failed, evicted = map(int, re.search(
        r"/health: (\d+) asked, failed (\d+) .*, 503 for too many connections (\d+)", said).groups())
    idle, peak, settled = map(int, re.search(r"memory: idle (\d+) MB, peak (\d+) MB, settled (\d+) MB", said).groups())
    assert requests > 1000 and unanswered == 0 and asked >= 100 and failed == 0 and evicted <= asked // 10, said
    assert idle < peak and settled <= idle + 150, said  # the bound serve_soak.py checks by default
    for kind, status in [("pixel bomb", 413), ("another origin", 403), ("half a body", 408), ("valid photo", 200),
                         ("valid 48 M pixels", 200), ("idle crowd", 503)]:
        assert re.search(rf"  {kind}: .*\d+ x {status}", said), (kind, said)


def test_levers_times_each_variant_of_a_lever_against_the_first(synthetic_archive):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "levers.py"), "--data", str(synthetic_archive), "--images", "64",
         "--rounds", "1", "--levers", "evaluation_batch"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("evaluation_batch:")
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines()
            if line.startswith("| ") and "img/s" not in line]
    assert [row[0].split("(")[0].strip() for row in rows] == ["32", "128", "256"]
    assert rows[0][2].strip() == rows[0][4].strip() == "1.00x"
    (base_train, base_eval), *others = [[float(row[column].replace(",", "")) for column in (1, 3)] for row in rows]
    for row, (train, evaluate) in zip(rows[1:], others):
        # each ratio is the variant's img/s over the first variant's, up to the printed rounding
        assert float(row[2].strip()[:-1]) == pytest.approx(train / base_train, abs=0.01 + 1 / base_train)
        assert float(row[4].strip()[:-1]) == pytest.approx(evaluate / base_eval, abs=0.01 + 1 / base_eval)


def _main_job_result(wall: float, cnn: tuple[float, float, float], vgg16: tuple[float, float, float]) -> dict:
    def metrics(train, test, accuracy):
        return {"train_seconds": train, "test_seconds": test, "test_accuracy": accuracy}
    return {"wall": wall, "metrics": {"cnn": metrics(*cnn), "vgg16": metrics(*vgg16)}}


def _main_job_module():
    spec = importlib.util.spec_from_file_location("main_job", BENCHMARKS / "main_job.py")
    main_job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_job)
    return main_job


def test_main_job_tabulates_where_the_time_went_and_the_ratio_of_total_wall_times():
    main_job = _main_job_module()
    results = {"before (abc)": [_main_job_result(900, (500, 20, 0.7312), (250, 60, 0.6319))],
               "now": [_main_job_result(600, (350, 15, 0.7356), (170, 25, 0.6319))]}
    table = main_job.summary(results)
    assert "| before (abc) | 15.00 | 500 + 20 | 250 + 60 | 70 | 73.12 | 63.19 |" in table  # 900 - 830 s elsewhere
    assert "| now | 10.00 | 350 + 15 | 170 + 25 | 40 | 73.56 | 63.19 |" in table
    last = table.splitlines()[-1]
    assert last.endswith("10.00 min against 15.00 min before (mean of 1 round(s), alternating): 1.50x")


def test_main_job_refuses_a_revision_git_does_not_know_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "main_job.py"), "--data", "unused", "--weights", "none",
         "--before", "no-such-revision", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("main_job: cannot check out 'no-such-revision'")
    assert not (tmp_path / "out" / "before-source").exists()


def test_main_job_children_import_the_checked_out_revision_not_the_installed_one(tmp_path, monkeypatch):
    main_job = _main_job_module()
    monkeypatch.chdir(tmp_path)  # the worktree lands where --out says, whatever the current folder
    folder = (tmp_path / "out" / "before-source").resolve()
    try:
        source = main_job.checkout("HEAD", folder)
        assert main_job.checkout("HEAD", folder) == source  # the same revision again: reused
        environment = main_job.child_environment(source)
        imported = subprocess.run([sys.executable, "-c", "import cnnlab; print(cnnlab.__file__)"], env=environment,
                                  capture_output=True, text=True, cwd=tmp_path).stdout.strip()
        assert Path(imported).resolve() == source / "cnnlab" / "__init__.py"
    finally:
        subprocess.run(["git", "-C", str(BENCHMARKS.parent), "worktree", "remove", "--force", str(folder)],
                       capture_output=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="imports cnnlab from .*, not from"):
        main_job.child_environment(tmp_path / "empty")  # no cnnlab there: the installed one would answer


def test_backbones_counts_the_forward_flops_of_a_runs_model(kind_runs):
    """Twice the multiply-adds of each convolution and dense layer: the tiny CNN (convs of 8 and 16 filters on
    32 and 16 px, dense 32, 10 classes) counted by hand."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("backbones", BENCHMARKS / "backbones.py")
        backbones = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(backbones)
    finally:
        sys.path.remove(str(BENCHMARKS))
    by_hand = 2 * (32 * 32 * 3 * 3 * 3 * 8 + 16 * 16 * 3 * 3 * 8 * 16 + 8 * 8 * 16 * 32 + 32 * 10)
    assert backbones.forward_flops(kind_runs["cnn"]) == by_hand


def test_cpu_settings_averages_each_setting_over_its_processes_and_divides_by_the_default():
    spec = importlib.util.spec_from_file_location("cpu_settings", BENCHMARKS / "cpu_settings.py")
    cpu_settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_settings)

    def row(train, evaluate):
        return {"preset": "seed", "model": "CNN", "train_images_per_second": train, "eval_images_per_second": evaluate,
                "train_gflops_per_second": train / 10, "peak_gflops_per_second": 500.0}

    runs = {"default": [[row(100, 1000)], [row(300, 3000)]], "inter1": [[row(100, 500)], []]}  # [] a failed process
    lines = {line["variant"]: line for line in cpu_settings.summary(runs)}
    assert lines["default"]["train_images_per_second"] == 200 and lines["default"]["train_ratio"] == 1.0
    assert (lines["inter1"]["train_ratio"], lines["inter1"]["eval_ratio"]) == (0.5, 0.25)
    assert lines["default"]["each_train"] == [100, 300] and lines["default"]["train_gflops_per_second"] == 20


def test_step_kernels_times_every_kernel_of_each_convolution_and_both_adam_steps():
    """Forward, both of TensorFlow's gradient kernels and both by convolution, for each of the seed CNN's four
    convolutions (the first one's input gradients, of the images, are not timed); then Keras's and the fused Adam step."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "step_kernels.py"), "--batch", "2", "--calls", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines()[2:]]
    assert len(rows) == 4 * 5 - 2 + 2  # the first convolution has no input gradient, of either kind
    assert [row[1] for row in rows[-2:]] == ["Adam step, Keras's", "Adam step, TensorFlow's fused kernel"]
    rows = rows[:-2]
    assert [row[1] for row in rows[:4]] == ["forward", "kernel gradient, TensorFlow's",
                                            "kernel gradient, by convolution", "forward"]
    assert all(float(row[2]) > 0 and float(row[3].rstrip(" |")) > 0 for row in rows)


def _device_kit(*arguments, cwd):
    return subprocess.run([sys.executable, str(BENCHMARKS / "device_kit.py"), *arguments], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def _packed(tmp_path, content: bytes) -> list[Path]:
    """`content` packed into tmp_path/kit in parts of at most 2,097 bytes (no wheels); the parts, in order."""
    data = tmp_path / "archive.tar.gz"
    data.write_bytes(content)
    packed = _device_kit("pack", "--data", str(data), "--part-mib", "0.002", "--no-wheels", "--kit", "kit",
                         cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    return sorted((tmp_path / "kit" / "parts").iterdir())


def test_device_kit_carries_a_file_in_parts_and_joins_it_once_all_have_come(tmp_path):
    """The data travels to a GPU machine one part a call: unpack keeps what came, names what is missing (exit 3),
    and once all parts are there gives back the same bytes, also to a later call that carries none."""
    content = bytes(range(256)) * 20 + b"tail"  # 5,124 bytes: three parts
    parts = _packed(tmp_path, content)
    assert [part.stat().st_size for part in parts] == [2097, 2097, 930]
    later = tmp_path / "later"
    later.mkdir()
    for part in parts[1:]:  # the first call carries the first part only
        part.rename(later / part.name)
    first = _device_kit("unpack", "--kit", "kit", "--into", "there", cwd=tmp_path)
    assert first.returncode == 3 and first.stdout == ""
    assert first.stderr.strip() == f"device_kit: parts still to come: {parts[1].name}, {parts[2].name}"
    for part in parts[1:]:  # the next call carries the others, and the first again
        (later / part.name).rename(part)
    second = _device_kit("unpack", "--kit", "kit", "--into", "there", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    joined = tmp_path / second.stdout.strip()
    assert joined.read_bytes() == content
    assert sorted(path.name for path in (tmp_path / "there").iterdir()) == ["archive.tar.gz"]  # no parts, no temporaries
    for part in parts:
        part.unlink()
    third = _device_kit("unpack", "--kit", "kit", "--into", "there", cwd=tmp_path)
    assert (third.returncode, third.stdout) == (0, second.stdout)


def test_device_kit_drops_a_held_part_that_no_longer_matches_and_asks_for_it_again(tmp_path):
    parts = _packed(tmp_path, b"x" * 3000)
    second_part = parts[1].read_bytes()
    parts[1].unlink()  # the first call carries the first part only
    assert _device_kit("unpack", "--kit", "kit", "--into", "there", cwd=tmp_path).returncode == 3
    held = tmp_path / "there" / "parts" / parts[0].name
    held.write_bytes(held.read_bytes()[:100])  # as a copy cut short by a kill would leave it
    parts[0].unlink()
    parts[1].write_bytes(second_part)  # the next call carries the second
    unpacked = _device_kit("unpack", "--kit", "kit", "--into", "there", cwd=tmp_path)
    assert unpacked.returncode == 3
    assert unpacked.stderr.strip() == f"device_kit: parts still to come: {parts[0].name}"


@pytest.mark.parametrize("damage, said", [
    ("part", "kit/parts/{part}: damaged (its SHA-256 is not the manifest's)"),
    ("no manifest", "kit/manifest.json missing: carry it in every call"),
    ("manifest", "kit/manifest.json: not a manifest written by `device_kit.py pack`"),
    ("folder", "[Errno 20] Not a directory: 'there/parts'"),
])
def test_device_kit_refuses_damaged_input_in_one_line(tmp_path, damage, said):
    parts = _packed(tmp_path, b"x" * 3000)
    manifest = tmp_path / "kit" / "manifest.json"
    if damage == "part":
        parts[0].write_bytes(b"y" + parts[0].read_bytes()[1:])
    elif damage == "no manifest":
        manifest.unlink()
    elif damage == "manifest":
        manifest.write_text('{"name": "archive.tar.gz", "parts": []}')
    else:
        (tmp_path / "there").write_text("a file where the parts should go")
    unpacked = _device_kit("unpack", "--kit", "kit", "--into", "there", cwd=tmp_path)
    assert unpacked.returncode == 2 and "Traceback" not in unpacked.stderr
    assert unpacked.stderr.strip() == "device_kit: " + said.format(part=parts[0].name)
    assert not (tmp_path / "there" / "archive.tar.gz").exists()


@pytest.mark.parametrize("part_mib", ["0", "-1", "nan", "100"])
def test_device_kit_refuses_parts_that_could_not_travel(tmp_path, part_mib):
    (tmp_path / "archive.tar.gz").write_bytes(b"x" * 100)
    packed = _device_kit("pack", "--data", "archive.tar.gz", "--part-mib", part_mib, "--no-wheels", cwd=tmp_path)
    assert packed.returncode == 2 and "Traceback" not in packed.stderr
    assert packed.stderr.strip().splitlines()[-1].endswith(f"--part-mib {float(part_mib)}: from over 0 to 58, to "
                                                           "travel in one call")
    assert not (tmp_path / ".kit").exists()
