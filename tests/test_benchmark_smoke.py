"""benchmarks/gpu_throughput.py --smoke: the tiny shape on the CPU prints its table and writes every figure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PER_MODE = [
    f"{stage}_{figure}" for stage in ("transcribe", "names", "notes")
    for figure in ("first_s", "wall_s", "rtf", "speed_x", "peak_gb")
] + ["pipeline_wall_s", "pipeline_rtf", "pipeline_speed_x", "decode_ms_per_step_batch1", "decode_ms_per_step_notes"]
EXPECTED = [
    "diarize_s", "diarize_vad_s", "diarize_embed_cluster_s", "prefill_tokens_per_s_batch1", "prefill_tokens_per_s_notes", "long_prefill_2048_s", "long_prefill_2048_tokens_per_s",
    "long_prefill_2048_peak_gb", "long_prefill_2048_s_lower-right", "long_prefill_2048_s_flex",
    "long_notes_2048_s", "long_notes_2048_peak_gb",
    "drafter_overhead_ms_per_token", "drafter_step_ms",
    "drafter_ms_per_token_plain", "drafter_ms_per_token_assisted", "drafter_steps_per_token", "peak_gb",
] + [f"{name}_{mode}" for name in PER_MODE for mode in ("dynamic", "static")]  # fmt: skip


@pytest.mark.slow
def test_gpu_throughput_smoke(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_throughput.py"),
            "--smoke",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    info, figures = data["info"], data["figures"]
    assert (
        info["dtype"] == "float32"
        and info["device"].startswith("cpu")
        and info["shape"] == "tiny"
    )
    assert (
        info["transcription_requests"] > 0
        and info["batch_size"] >= 1
        and info["notes_requests"] >= 1
        and info["names_tokens"] > 0
    )
    batch = info["batch_size"]
    for name in EXPECTED + [
        f"prefill_tokens_per_s_batch{batch}",
        f"decode_ms_per_step_batch{batch}_dynamic",
        f"decode_ms_per_step_batch{batch}_static",
    ]:
        assert name in figures, name
    counts = {f"{kind}_{part}" for kind in ("compile_graph_breaks", "compile_graphs", "cudagraph_skips")
              for part in ("static", "long_notes")}
    assert counts <= set(figures)
    for name, value in figures.items():
        if isinstance(value, str):  # a figure that did not run says why
            assert value, name
        elif name in counts:
            assert isinstance(value, int) and value >= 0, (name, value)
        else:
            assert isinstance(value, (int, float)) and value > 0, (name, value)
    # Every decode step compiled whole (a graph break would run eager code between graphs on every step); the
    # three stages and the decode figures trace a handful of shapes; the CPU has no CUDA graphs to skip.
    assert figures["compile_graph_breaks_static"] == 0 and "graph_break_reasons_static" not in info
    assert 1 <= figures["compile_graphs_static"] <= 8 and figures["cudagraph_skips_static"] == 0
    # A random drafter: every generated token cost at least one draft step.
    assert isinstance(figures["drafter_step_ms"], float) and figures["drafter_steps_per_token"] >= 1
    assert abs(info["speech_s"] - 120) < 10  # 2 minutes of turns
    # Transcription answers as long as each clip's speech (3.25 tokens a second), not one length for all.
    assert info["answer_lengths"] == "speech"
    assert 3.25 * info["speech_s"] <= info["transcribe_answer_tokens"] <= 3.25 * info["speech_s"] + \
        info["transcription_requests"]
    assert info["transcribe_answer_tokens_max"] > info["transcribe_answer_tokens"] / info["transcription_requests"]
    assert info["long_notes_2048_path"].startswith("static cache")  # the engine's path on the CPU with --compile
    assert info["diarize_turns"] >= 10  # voices were embedded and clustered, not skipped as non-speech
    for name in ("transcribe_rtf_static", "decode_ms_per_step_batch1_static", "decode_ms_per_step_notes_static",
                 "long_prefill_2048_s",
                 "long_prefill_2048_s_lower-right", "long_prefill_2048_s_flex", "drafter_overhead_ms_per_token"):
        assert isinstance(figures[name], float), name
    # The pipeline is diarization plus the three model stages, warm.
    for mode in ("dynamic", "static"):
        stages = sum(figures[f"{stage}_wall_s_{mode}"] for stage in ("transcribe", "names", "notes"))
        assert figures[f"pipeline_wall_s_{mode}"] == pytest.approx(figures["diarize_s"] + stages)
    # Every batch of the smoke run fits the static path.
    for stage in ("transcribe", "names", "notes"):
        assert figures[f"{stage}_static_batches_static"] == figures[f"{stage}_batches_static"] >= 1, stage
    assert "pipeline_rtf_static" in run.stdout and "decode_ms_per_step_batch1_dynamic" in run.stdout


@pytest.mark.slow
def test_parts_split_a_run(tmp_path):
    """--parts times only what is asked (a GPU run split into commands under a time limit)."""
    out = tmp_path / "long.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--smoke", "--parts", "long",
                          "--long-attention", "sdpa", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    assert sorted(figures) == ["long_prefill_2048_peak_gb", "long_prefill_2048_s", "long_prefill_2048_tokens_per_s",
                               "peak_gb"]
    assert "long prefill 2048 (sdpa) done" in run.stderr


@pytest.mark.parametrize("variant", ["lower-right", "flex"])
def test_long_prefill_attention_variants_give_the_masked_results(tiny_checkpoint, variant, monkeypatch):
    """The long-prefill experiments (global layers without the dense mask; flex over a static K/V buffer)
    change no number: chunked logits as with transformers' sdpa and a DynamicCache."""
    import torch
    from transformers import AutoModelForMultimodalLM

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import long_attention

    model = AutoModelForMultimodalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    text = model.config.get_text_config()
    ids = torch.randint(10, 390, (1, 700), generator=torch.Generator().manual_seed(0))

    def chunked_logits(name):
        model.set_attn_implementation({"text_config": long_attention.register(name)})
        cache, out = long_attention.prefill_cache(name, text, 700), []
        with torch.no_grad():
            for s in range(0, 700, 128):
                e = min(700, s + 128)
                out.append(model(input_ids=ids[:, s:e], past_key_values=cache, use_cache=True,
                                 cache_position=torch.arange(s, e)).logits)
        return torch.cat(out, 1)

    expected = chunked_logits("sdpa")
    calls = []
    original = long_attention.lower_right_attention

    def spy(module, query, key, *args, **kwargs):
        calls.append((module.sliding_window, query.shape[2], key.shape[2]))
        return original(module, query, key, *args, **kwargs)

    monkeypatch.setattr(long_attention, "lower_right_attention", spy)
    flex_before = long_attention.FLEX.calls
    got = chunked_logits(variant)
    if variant == "lower-right":
        assert (None, 128, 384) in calls  # a global layer, a chunk against the cache before it
    else:
        assert long_attention.FLEX.calls - flex_before == 6  # the global layer of each of the 6 chunks
    torch.testing.assert_close(got, expected)


@pytest.mark.slow
def test_compile_time_prints_what_a_shape_costs(tmp_path):
    """benchmarks/compile_time.py on the tiny shape with the eager backend (tracing only)."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile_time.py"), "--shape", "tiny",
                          "--device", "cpu", "--backend", "eager", "--cache-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    line = run.stdout.strip().splitlines()[-1]
    first, second, traced = (float(x) for x in re.findall(r"(?:first call|second|compile_inner) ([\d.]+) s", line))
    assert first > second >= 0 and traced > 0 and "shapes [(2, 1024)]" in line


@pytest.mark.slow
def test_long_notes_take_the_static_path_in_chunks_when_at_once_does_not_fit(tmp_path):
    """--static-free-gb: 25 MB leaves the tiny model's 2048-token notes room for 1024-token chunks only."""
    out = tmp_path / "notes.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--smoke", "--parts",
                          "notes-long", "--static-free-gb", "0.025", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["info"]["long_notes_2048_path"] == \
        "static cache, prefilled in chunks of 1024, compiled decoding"
    assert isinstance(data["figures"]["long_notes_2048_s"], float)


def test_gpu_summary_judges_each_target(tmp_path):
    """gpu_summary.py: the best variant of a figure counts, a target is met or missed, an out-of-memory figure and
    a file that is not there are said."""
    static = {"info": {"batch_size": 48, "minutes": 30, "device": "cuda:0 (H200)"},
              "figures": {"transcribe_wall_s_static": 8.5, "pipeline_wall_s_static": 41.0,
                          "decode_ms_per_step_batch1_static": 11.2, "decode_ms_per_step_batch48_static": 30.5}}
    long = {"info": {}, "figures": {"long_prefill_131072_s_flex": 20.0, "long_prefill_131072_s_lower-right": 25.0,
                                    "long_prefill_262144_s_flex": "out of memory: tried to allocate 16 GiB",
                                    "long_prefill_262144_s_lower-right": 75.0}}
    (tmp_path / "static.json").write_text(json.dumps(static))
    (tmp_path / "long.json").write_text(json.dumps(long))
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_summary.py"), str(tmp_path / "static.json"),
                          str(tmp_path / "long.json"), str(tmp_path / "dynamic.json")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    lines = {line.split("  ")[0].strip(): line for line in run.stdout.splitlines()}
    assert lines["transcription of the 30-min meeting, warm (s)"].endswith("MET")
    assert lines["whole pipeline, 30-min meeting, warm (s)"].endswith("missed")
    assert lines["decode at batch 1 (ms/step)"].endswith("MET")
    assert re.search(r"20\s+-\s+ran \(flex\)$", lines["128 k-token notes prefill (s)"])
    assert re.search(r"75\s+60\s+missed \(lower-right\)$", lines["256 k-token notes prefill (s)"])
    assert "end to end, x real time" in lines and lines["end to end, x real time"].endswith("not measured")
    assert "30.5" in lines["decode at batch 48, static / default (ms/step)"]
    assert "not read: " + str(tmp_path / "dynamic.json") in run.stdout


def test_gpu_session_keeps_to_its_budget(tmp_path):
    """gpu_session.sh with no time left skips every part (none may start that cannot finish in the lease) and still
    prints the summary, which says that no figures came."""
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "--rehearse"], cwd=tmp_path,
                         env={**os.environ, "OUT": str(tmp_path / "out"), "GPU_SESSION_SECONDS": "0",
                              "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=120, check=False)
    for part in ("static", "long", "dynamic"):
        assert f"gpu_session: {part} skipped" in run.stdout, run.stdout + run.stderr
    assert "not read: " in run.stdout and run.returncode == 1  # the summary found no figures
    assert (tmp_path / "out" / "machine.txt").read_text().strip()


def test_noisy_copies_keep_their_snr_and_an_rttm_is_a_truth(tmp_path):
    """benchmarks/add_noise.py: the noise sits the asked dB under the speech's own level (not the file's, pauses
    included), with the asked colour; eval_diarization reads an RTTM where no truth JSON is (pyannote's sample)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import add_noise
    import eval_diarization

    rng = np.random.default_rng(0)
    wav = np.zeros(16_000 * 10, dtype=np.float32)
    wav[16_000 * 2 : 16_000 * 6] = 0.1 * np.sin(np.arange(16_000 * 4) * 0.3)  # 4 s of "speech" at -23 dBFS
    for kind in ("white", "pink", "brown"):
        out = add_noise.noisy(wav, [(2.0, 6.0, "A")], kind, 15.0, rng)
        noise = out - wav
        snr = 10 * np.log10(np.mean(wav[32_000:96_000] ** 2) / np.mean(noise**2))
        assert snr == pytest.approx(15.0, abs=0.1)
        power = np.abs(np.fft.rfft(noise)) ** 2
        low, high = power[100:1000].mean(), power[40_000:50_000].mean()  # 10-100 Hz against 4-5 kHz
        assert (0.5 < low / high < 2) if kind == "white" else (low / high > 10)

    media = tmp_path / "phone_call.wav"
    media.write_bytes((ROOT / "samples" / "phone_call.wav").read_bytes())
    (tmp_path / "phone_call.rttm").write_text((ROOT / "samples" / "phone_call.rttm").read_text())
    assert eval_diarization.truth_path(media).suffix == ".rttm"
    truth = json.loads((ROOT / "samples" / "phone_call.truth.json").read_text())
    turns = eval_diarization.truth_turns(eval_diarization.truth_path(media))
    assert [(round(a, 2), round(b, 2)) for a, b, _ in turns] == [
        (round(s["start"], 2), round(s["end"], 2)) for s in truth["segments"]]  # the RTTM labels them by name
    assert len({speaker for _, _, speaker in turns}) == len({s["speaker"] for s in truth["segments"]}) == 2
    noisy_dir = tmp_path / "noisy"
    assert add_noise.main([str(tmp_path), str(noisy_dir), "--kind", "pink", "--snr", "20"]) == 0
    assert sorted(p.name for p in noisy_dir.iterdir()) == ["phone_call.rttm", "phone_call.wav"]
    row = eval_diarization.evaluate(noisy_dir / "phone_call.wav")
    assert row["speakers_true"] == 2 and 0 <= row["der"] < 0.5
    short = [s for s in truth["segments"] if s["end"] - s["start"] < eval_diarization.SHORT_TURN]
    assert row["short_turns"] == len(short) >= 1 and 0 <= row["short_turns_right"] <= row["short_turns"]
    one_voice = eval_diarization.evaluate(noisy_dir / "phone_call.wav", changes={"num_speakers": 1})
    assert one_voice["speakers_found"] == 1  # --set reaches the diarizer
