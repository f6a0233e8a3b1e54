"""Decoding + keyframing speed and memory against a bare `ffmpeg -i X -f null -`.

    python benchmarks/media_decode.py [--minutes 60] [--keep /tmp/bench.mp4]

Makes a synthetic 720p recording (slides that change every ~40 s over a moving clock, plus speech-like
audio), then times: FFmpeg decoding everything to nothing; g4media's decode_audio + extract_keyframes.
Prints wall times, their ratio, and the peak resident memory of the g4media run (a child process).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mediapipe_g4.media import ffmpeg_binary


def make_recording(path: Path, minutes: float) -> None:
    """Slides that change every 40 s (a new title and bullet) beside a webcam-like tile that moves every frame."""
    seconds = int(minutes * 60)
    slides = (f"color=c=white:s=1280x720:r=25:d={seconds},"
              "drawtext=text='Slide %{eif\\:floor(t/40)+1\\:d}':fontsize=72:x=80:y=80:fontcolor=black,"
              "drawtext=text='Point %{eif\\:mod(floor(t/40)*7\\,13)\\:d} of the plan':fontsize=40:x=80:y=240")
    webcam = "testsrc2=s=320x180:r=25"  # a tile that moves every frame, like a webcam
    audio = f"anoisesrc=d={seconds}:c=pink:a=0.05:r=48000"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", slides, "-f", "lavfi", "-i", webcam,
                    "-f", "lavfi", "-i", audio, "-filter_complex", "[0][1]overlay=x=940:y=520:shortest=1[v]",
                    "-map", "[v]", "-map", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "250",
                    "-c:a", "aac", "-ac", "2", "-shortest", str(path)], check=True)


def child(path: str) -> None:
    """The measured run, in its own process so that its peak RSS is its own."""
    from mediapipe_g4 import media, video

    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        info = media.probe(path)
        wave = media.decode_audio(path, work, info=info)
        t1 = time.perf_counter()
        kfs = video.extract_keyframes(path, work, info=info)
        t2 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"audio_s": t1 - t0, "keyframes_s": t2 - t1, "total_s": t2 - t0, "samples": len(wave),
                      "keyframes": len(kfs), "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--keep", type=Path, help="make (or reuse) the recording at this path")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    path = args.keep or Path(tempfile.mkdtemp()) / f"bench_{int(args.minutes)}min.mp4"
    if not path.exists():
        t = time.perf_counter()
        make_recording(path, args.minutes)
        print(f"made {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "null", "-"], check=True)
    bare = time.perf_counter() - t
    out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # FFmpeg's own RSS is in the child's children; report the larger of the Python and FFmpeg peaks
    print(f"recording      {args.minutes:.0f} min 720p, {path.stat().st_size / 1e6:.0f} MB")
    print(f"bare ffmpeg    {bare:7.1f} s  (ffmpeg -i X -f null -)")
    print(f"g4media        {res['total_s']:7.1f} s  (audio {res['audio_s']:.1f} s + keyframes {res['keyframes_s']:.1f} s)")
    print(f"ratio          {res['total_s'] / bare:7.2f} x  (target <= 1.5)")
    print(f"keyframes      {res['keyframes']} (slides: {int(args.minutes * 60 // 40) + (args.minutes * 60 % 40 > 0)})")
    print(f"peak RSS       {res['peak_rss_mb']:7.0f} MB (Python process; target < 500)")


if __name__ == "__main__":
    main()
