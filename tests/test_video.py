"""`superres video`: real files made with PyAV, streamed through a network and checked back."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from conftest import run_main  # noqa: E402

from superres.archs.spec import ModelFacts, VideoRun  # noqa: E402
from superres.infer.video import upscale_video  # noqa: E402 - after the PyAV check
from superres.io.video import VideoError, probe  # noqa: E402
from superres.runner import Runner  # noqa: E402
from superres.runtime import RunOptions  # noqa: E402
from superres.zoo import ModelDescriptor, create_model, describe, load_model  # noqa: E402

FP32 = RunOptions(device="cpu", precision="fp32")


def make_video(path: Path, photo: np.ndarray, frames: int = 20, fps: int = 25, size: tuple[int, int] = (48, 32),
               audio: bool = True, vfr: bool = False, rotation: int = 0, sar: Fraction | None = None) -> Path:
    """A real H.264 file panning over a photo, with a 440 Hz AAC track as long as the video."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    if vfr:
        video.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        video.set_display_rotation(rotation)
    if sar:
        video.codec_context.sample_aspect_ratio = sar
    sound = out.add_stream("aac", rate=48000) if audio else None
    wave = (0.2 * np.sin(np.arange(round(48000 * frames / fps)) * 2 * np.pi * 440 / 48000)).astype(np.float32)
    sent = 0
    t = 0
    for i in range(frames):
        j = i % 50
        crop = np.ascontiguousarray((photo[j:j + size[1], 2 * j:2 * j + size[0], :3] * 255).astype(np.uint8))
        frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
        if vfr:  # alternating 20 ms and 40 ms frames
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            t += 40 if i % 2 else 20
        out.mux(video.encode(frame))
        while sound is not None and sent < min(len(wave), round(48000 * (i + 1) / fps)):  # interleaved, as real files
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, sent:sent + 1024]), format="flt",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = 48000, sent
            out.mux(sound.encode(chunk))
            sent += 1024
    out.mux(video.encode(None))
    if sound is not None:
        out.mux(sound.encode(None))
    out.close()
    return path


def streams(path: Path) -> dict[str, float]:
    """Duration in seconds of each stream, from the packets' timestamps."""
    with av.open(str(path)) as c:
        ends: dict[str, float] = {}
        for packet in c.demux():
            if packet.pts is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                ends[packet.stream.type] = max(ends.get(packet.stream.type, 0.0), end)
        return ends


def decoded(path: Path) -> list:
    with av.open(str(path)) as c:
        return [(f.pts, f.time_base, f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def test_round_trip_keeps_size_frames_duration_and_audio(tmp_path, photos):
    src = make_video(tmp_path / "in.mp4", photos["chelsea"])
    dst = tmp_path / "out.mp4"
    result = upscale_video(src, dst, crf=0, pix_fmt="yuv444p")
    info, original = probe(dst), probe(src)
    assert (info.width, info.height) == (192, 128) and result.frames == 20
    assert info.frame_rate == original.frame_rate == 25
    a, b = streams(src), streams(dst)
    assert abs(b["video"] - a["video"]) <= 1 / 25 and abs(b["audio"] - a["audio"]) < 1e-3
    assert abs(b["audio"] - b["video"]) <= 1 / 25
    # the frames are the network's output on the decoded frames (up to the codec's rounding)
    from superres.infer import Upscaler

    upscaler = Upscaler("realesr-animevideov3")
    for (_, _, lr), (_, _, sr) in list(zip(decoded(src), decoded(dst), strict=True))[::7]:
        expected = upscaler.upscale_array(lr).astype(np.float64)
        mse = np.mean((sr.astype(np.float64) - expected) ** 2)
        assert 10 * np.log10(255**2 / mse) > 38


def test_variable_frame_rate_keeps_timestamps(tmp_path, photos):
    src = make_video(tmp_path / "vfr.mkv", photos["astronaut"], frames=12, audio=False, vfr=True)
    dst = tmp_path / "vfr_x2.mkv"
    upscale_video(src, dst, model="bicubic", outscale=2)
    times = [float(p * tb) for p, tb, _ in decoded(dst)]
    assert times == [float(p * tb) for p, tb, _ in decoded(src)]
    assert np.diff(times).round(3).tolist() == [0.02, 0.04] * 5 + [0.02]


def test_subtitles_are_copied_as_they_are(tmp_path, photos):
    """An mkv with video, audio and an SRT subtitle track: the subtitles come out packet for packet."""
    (tmp_path / "subs.srt").write_text("1\n00:00:00,100 --> 00:00:00,400\nHello\n\n"
                                       "2\n00:00:00,500 --> 00:00:00,700\nWorld\n")
    plain = make_video(tmp_path / "plain.mp4", photos["chelsea"])
    src = tmp_path / "subbed.mkv"
    with av.open(str(plain)) as a, av.open(str(tmp_path / "subs.srt")) as b, av.open(str(src), "w") as out:
        inputs = [*a.streams, *b.streams]
        copies = {id(s): out.add_stream_from_template(s) for s in inputs}
        for container in (a, b):
            for packet in container.demux():
                if packet.dts is not None:
                    packet.stream = copies[id(packet.stream)]
                    out.mux(packet)

    def subtitles(path: Path) -> list:
        with av.open(str(path)) as c:
            assert [s.type for s in c.streams] == ["video", "audio", "subtitle"]
            return [(float(p.pts * p.time_base), float(p.duration * p.time_base), bytes(p))
                    for p in c.demux(c.streams.subtitles[0]) if p.dts is not None]

    made = subtitles(src)  # (the muxer may move all streams by the same start offset)
    assert [(d, text) for _, d, text in made] == [(0.3, b"Hello"), (0.2, b"World")]
    assert made[1][0] - made[0][0] == pytest.approx(0.4)
    upscale_video(src, tmp_path / "out.mkv", model="bicubic", outscale=2)
    assert subtitles(tmp_path / "out.mkv") == subtitles(src)


def test_start_end_cut_video_and_audio_together(tmp_path, photos):
    src = make_video(tmp_path / "in.mkv", photos["chelsea"], frames=25)
    dst = tmp_path / "cut.mkv"
    result = run_main("video", src, "-o", dst, "-m", "bicubic", "--start", "0.2", "--end", "0:00.6", "-q")
    assert result.returncode == 0, result.stderr
    frames = decoded(dst)
    assert len(frames) == 10 and float(frames[0][0] * frames[0][1]) == 0.0
    lengths = streams(dst)
    assert abs(lengths["video"] - 0.4) <= 0.04 and abs(lengths["audio"] - 0.4) <= 0.03


def test_rotation_aspect_and_folders_of_frames(tmp_path, photos):
    src = make_video(tmp_path / "rot.mp4", photos["chelsea"], frames=5, audio=False, rotation=90, sar=Fraction(4, 3))
    dst = tmp_path / "rot_x2.mp4"
    upscale_video(src, dst, model="bicubic", outscale=2)
    assert probe(dst).rotation == probe(src).rotation != 0
    assert probe(dst).sample_aspect_ratio == probe(src).sample_aspect_ratio == Fraction(4, 3)
    frames_dir = tmp_path / "frames"
    assert upscale_video(src, frames_dir, model="bicubic", outscale=2).frames == 5
    pngs = sorted(p.name for p in frames_dir.iterdir())
    assert pngs == [f"frame_{i:06d}.png" for i in range(5)]
    back = tmp_path / "back.mkv"
    assert upscale_video(frames_dir, back, model="bicubic", outscale=0.5, fps=10).frames == 5
    info = probe(back)
    assert info.frame_rate == 10 and (info.width, info.height) == (48, 32)


def test_errors_are_one_line_and_leave_nothing(tmp_path, photos, monkeypatch):
    def run(*args):
        return run_main("video", *args, "-q")  # in this process (see conftest.run_main)

    (tmp_path / "notes.mp4").write_text("not a video")
    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=48000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, 0
        out.mux(s.encode(chunk))
        out.mux(s.encode(None))
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=6)
    for args, message in [((tmp_path / "notes.mp4",), "not a readable video"),
                          ((sound,), "has no video stream"),
                          ((tmp_path / "missing.mp4",), "no such file"),
                          ((src, "--codec", "nope"), "unknown or unavailable codec 'nope'"),
                          ((src, "--start", "soon"), "is not a time")]:
        result = run(args[0], "-o", tmp_path / "out.mp4", *args[1:])
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    # an interruption in the middle leaves neither the output nor a temporary file
    from superres.infer import Upscaler

    calls = []

    def failing(self, image, outscale=None, progress=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.zeros((image.shape[0] * 4, image.shape[1] * 4, 3), np.uint8)

    monkeypatch.setattr(Upscaler, "upscale_array", failing)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "notes.mp4", "sound.m4a"]
    with pytest.raises(VideoError, match="unknown video container"):
        upscale_video(src, tmp_path / "out.xyz")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
def test_memory_stays_flat_with_length(tmp_path, photos):
    """Peak RSS for a 1000-frame video within 10% of a 200-frame one (streamed, never held)."""
    # VmHWM, the peak of this process's own memory: ru_maxrss would also count the parent's, which
    # Linux carries over through fork and exec
    script = (
        "import re, sys\n"
        "from superres.infer.video import upscale_video\n"
        "upscale_video(sys.argv[1], sys.argv[2], model='bicubic', outscale=2)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
    )
    peaks = {}
    for n in (200, 1000):
        src = make_video(tmp_path / f"{n}.mp4", photos["astronaut"], frames=n, size=(64, 48))
        out = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / f"{n}_x2.mp4")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-1500:]
        peaks[n] = int(out.stdout.split()[-1])
        assert len(decoded(tmp_path / f"{n}_x2.mp4")) == n
    assert peaks[1000] <= 1.1 * peaks[200], peaks
    print(f"peak memory (VmHWM, KiB): {peaks}")


def test_video_networks_run_on_overlapping_clips(tmp_path, photos):
    import torch

    from superres.archs.basicvsr import BasicVSR
    from superres.infer.video import ClipUpscaler
    from superres.zoo import save_model

    class Recorder(torch.nn.Module):  # a per-frame x2 "video network" that records its clip lengths
        def __init__(self):
            super().__init__()
            self.lengths = []

        def forward(self, x):
            self.lengths.append(x.shape[1])
            return x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

    recorder = Recorder()
    desc = ModelDescriptor(recorder, "Recorder", {}, ModelFacts("video", 2, 3, 3, video=VideoRun("clip", 5, 1)))
    rng = np.random.default_rng(0)
    clip = [(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), i * 10, Fraction(1, 100)) for i in range(11)]
    runner = ClipUpscaler(Runner(desc, FP32), None, clip=5, overlap=1)
    out = list(runner(iter(clip)))
    assert [pts for _, pts, _ in out] == [i * 10 for i in range(11)]
    for (sr, _, _), (lr, _, _) in zip(out, clip, strict=True):
        np.testing.assert_array_equal(sr, lr.repeat(2, 0).repeat(2, 1))
    assert max(recorder.lengths) <= 5 and sum(recorder.lengths) < 2 * 11  # held frames stay bounded

    model = tmp_path / "basicvsr.safetensors"
    save_model(BasicVSR(num_feat=8, num_block=1), model)
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=7, size=(72, 64))  # SPyNet needs >= 64
    result = upscale_video(src, tmp_path / "out.mp4", model=str(model))
    assert result.frames == 7 and probe(tmp_path / "out.mp4").width == 288
    assert abs(streams(tmp_path / "out.mp4")["audio"] - streams(src)["audio"]) < 1e-3


def test_sliding_window_networks_see_their_neighbours(tmp_path, photos):
    import torch

    from superres.archs.edvr import EDVR
    from superres.infer.video import WindowUpscaler
    from superres.zoo import save_model

    class MeanOfWindow(torch.nn.Module):  # x2 of the window's mean: shows which frames were used
        def forward(self, x):
            return x.mean(1).repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

    facts = ModelFacts("video", 2, 3, 3, video=VideoRun("window", 3))
    desc = ModelDescriptor(MeanOfWindow(), "MeanOfWindow", {}, facts)
    clip = [(np.full((4, 8, 3), 10 * i, np.uint8), i, Fraction(1, 25)) for i in range(6)]
    out = list(WindowUpscaler(Runner(desc, FP32), None, frames=3)(iter(clip)))
    # frame i sees frames i-1, i, i+1, with the first and last repeated beyond the ends
    expected = [(0 + 0 + 10) / 3, 10, 20, 30, 40, (40 + 50 + 50) / 3]
    assert [pts for _, pts, _ in out] == list(range(6))
    assert [float(sr[0, 0, 0]) for sr, _, _ in out] == [round(v) for v in expected]

    model = tmp_path / "edvr.safetensors"
    save_model(EDVR(num_feat=16, num_frame=3, deformable_groups=4, num_extract_block=1, num_reconstruct_block=1),
               model)
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=4, size=(50, 30))  # not multiples of 4
    assert upscale_video(src, tmp_path / "out.mp4", model=str(model)).frames == 4
    assert (probe(tmp_path / "out.mp4").width, probe(tmp_path / "out.mp4").height) == (200, 120)


def test_single_frame_ablation_of_recurrent_networks():
    """Fed one frame, a recurrent network sees each frame alone: clips of one frame, outputs in order."""
    import torch

    from superres.infer.video import video_runner

    torch.manual_seed(0)
    net = create_model("BasicVSR", num_feat=8, num_block=1).module.eval()

    desc = describe(net)
    rng = np.random.default_rng(0)
    clip = [(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8), i, Fraction(1, 25)) for i in range(4)]
    together = [sr for sr, _, _ in video_runner(desc, options=FP32)(iter(clip))]
    alone = list(video_runner(desc, options=FP32, single_frame=True)(iter(clip)))
    assert [pts for _, pts, _ in alone] == list(range(4))
    for (sr, _, _), (lr, _, _) in zip(alone, clip, strict=True):
        with torch.inference_mode():
            x = torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255)[None, None]
            expected = net(x)[0, 0].clamp(0, 1).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(sr.astype(np.float32) / 255, expected, atol=1 / 255 + 1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(together, (sr for sr, _, _ in alone), strict=True))


def test_video_networks_obey_the_run_options(tmp_path, photos, capsys):
    """--precision, --backend and --tile reach video networks: honoured, or refused in one line."""
    import torch

    from superres.cli import main
    from superres.infer.video import video_runner
    from superres.zoo import save_model

    torch.manual_seed(0)
    model = tmp_path / "basicvsr.safetensors"
    save_model(create_model("BasicVSR", num_feat=8, num_block=1), model)
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=3, size=(72, 64), audio=False)
    for option, message in ((["--precision", "fp16", "--device", "cpu"], "fp16 is not supported on the CPU"),
                            (["--backend", "ncnn"], "named models that ship as ncnn files"),
                            (["--tile", "32"], "runs on whole frames")):
        code = main(["video", str(src), "-o", str(tmp_path / "out.mp4"), "-m", str(model), "-q", *option])
        assert code == 1 and message in capsys.readouterr().err, option
        assert not (tmp_path / "out.mp4").exists()
    desc = load_model(model)
    for precision in desc.precisions:
        if precision == "fp16":
            continue  # a CUDA precision
        runner = video_runner(desc, options=RunOptions(device="cpu", precision=precision))
        frames = [(f, i, Fraction(1, 25)) for i, (_, _, f) in enumerate(decoded(src))]
        assert len(list(runner(iter(frames)))) == 3
        assert runner.runner.precision_used == precision


def test_upscale_video_takes_options_by_keyword(tmp_path, photos):
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=2, audio=False)
    with pytest.raises(TypeError):
        upscale_video(src, tmp_path / "out.mp4", "bicubic", 2)  # outscale must be named
    result = upscale_video(src, tmp_path / "out.mp4", "bicubic", outscale=2, options=RunOptions(device="cpu"))
    assert result.frames == 2


def test_codec_auto_uses_nvenc_only_where_a_test_encode_works(tmp_path, photos):
    from superres.io.encoders import encoder_options, pick_encoder

    listed = {"libx264", "libx265", "h264_nvenc", "hevc_nvenc"}
    assert pick_encoder("auto", listed, works=lambda name: True) == "h264_nvenc"
    assert pick_encoder("hevc", listed, works=lambda name: True) == "hevc_nvenc"
    assert pick_encoder("auto", listed, works=lambda name: False) == "libx264"  # listed, but no engine (H100)
    assert pick_encoder("hevc", {"libx265"}, works=lambda name: pytest.fail("probed")) == "libx265"
    assert pick_encoder("libx264", listed, works=lambda name: pytest.fail("probed")) == "libx264"  # forced
    assert encoder_options("h264_nvenc", 18, "veryfast") == {"rc": "vbr", "b": "0", "preset": "p3", "cq": "18"}
    assert encoder_options("libx264", 18, "veryfast") == {"crf": "18", "preset": "veryfast"}
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=2, audio=False)
    upscale_video(src, tmp_path / "out.mp4", "bicubic", outscale=2)  # auto on this machine: a working encoder
    assert probe(tmp_path / "out.mp4").frames == 2


def test_frames_in_batches_equal_frames_one_by_one(photos):
    from superres.infer import Upscaler
    from superres.infer.video import FrameUpscaler

    rng = np.random.default_rng(0)
    clip = [(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), i, Fraction(1, 25)) for i in range(5)]
    one = Upscaler("realesr-animevideov3", RunOptions(device="cpu", batch=1))
    three = Upscaler("realesr-animevideov3", RunOptions(device="cpu", batch=3))
    assert three.frames_per_batch(12, 10) == 3 and one.frames_per_batch(12, 10) == 1
    a = list(FrameUpscaler(one, None)(iter(clip)))
    b = list(FrameUpscaler(three, 2.0)(iter(clip)))
    assert [pts for _, pts, _ in b] == list(range(5))
    for (x, _, _), (y, _, _), (lr, _, _) in zip(a, b, clip, strict=True):
        assert x.shape == (48, 40, 3) and y.shape == (24, 20, 3)
        np.testing.assert_array_equal(x, one.upscale_array(lr))  # the batched path is the single-image one
    stacked = three.runner.batch(np.stack([f for f, _, _ in clip[:3]]))
    for out, (lr, _, _) in zip(stacked, clip, strict=False):
        np.testing.assert_array_equal(out, one.upscale_array(lr))


def test_sigterm_removes_the_temp_file_and_stale_ones_go_next_run(tmp_path, photos):
    import os
    import signal
    import time

    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=400, audio=False)
    dst = tmp_path / "new" / "out.mp4"  # a folder that does not exist yet is made, as `upscale` does
    proc = subprocess.Popen([sys.executable, "-m", "superres", "video", str(src), "-o", str(dst), "-m", "bicubic",
                             "--segment-frames", "0", "-q"], stderr=subprocess.PIPE, text=True)  # one stream
    deadline = time.monotonic() + 60
    while not list(dst.parent.glob(".out.mp4.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert "Traceback" not in proc.stderr.read()
    assert list(dst.parent.iterdir()) == []
    # a SIGKILLed run leaves its temp file; the next run into the destination removes it (not a live one's)
    dead = dst.parent / ".out.mp4.999999999.abcd.tmp"
    live = dst.parent / f".out.mp4.{os.getpid()}.abcd.tmp"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    short = make_video(tmp_path / "short.mp4", photos["chelsea"], frames=3, audio=False)
    assert upscale_video(short, dst, model="bicubic").frames == 3
    assert sorted(p.name for p in dst.parent.iterdir()) == [live.name, "out.mp4"]


def test_the_writer_thread_ends_after_a_wake_up_lost_to_a_signal():
    """SIGTERM raised inside ``Queue.put``'s wake-up of the writer thread can leave a spent waiter first in
    line (CPython's ``Condition.notify`` interrupted between releasing and removing it): the next put then wakes
    nobody. The writer polls, so ``close`` still ends (it hung 1 run in 6 of a SIGTERM under load)."""
    import threading
    import time

    from superres.infer.video import BackgroundWriter

    writer = BackgroundWriter(lambda item: None)
    time.sleep(0.3)  # the thread now waits for an item
    spent = threading.Lock()
    spent.acquire()
    writer.q.not_empty._waiters.appendleft(spent)  # as the interrupted wake-up leaves it
    closer = threading.Thread(target=writer.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive() and not writer.thread.is_alive()


def test_prefetch_stops_touching_its_items_when_a_signal_raises_inside_thread_start(monkeypatch):
    """SIGTERM as ``prefetch`` starts its thread (``Thread.start`` waits for it: the signal raises there) left the
    thread decoding after the command had closed the file, and it crashed the interpreter at exit (SIGSEGV, seen
    in a CI run). Now nothing touches the items once the consumer has the exception."""
    import threading
    import time

    from superres.errors import Terminated
    from superres.infer.video import prefetch

    taken = []

    def items():
        for i in range(1000):
            time.sleep(0.01)
            taken.append(i)
            yield i

    start = threading.Thread.start

    def interrupted_start(self):
        start(self)
        raise Terminated(15)  # as the handler raises it, once the thread runs

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    with pytest.raises(Terminated):
        next(prefetch(items()))
    seen = len(taken)
    time.sleep(0.3)
    assert len(taken) == seen


def test_a_writer_close_interrupted_by_a_signal_still_ends_its_thread_on_clean_up():
    """SIGTERM while ``close`` waits for the last frames to be encoded: the clean-up's second ``close`` (through
    ``_undo``) must wait too, or the output file is discarded (closed) under a thread still encoding into it."""
    import time

    from superres.errors import Terminated
    from superres.infer.video import BackgroundWriter, _undo

    written = []
    writer = BackgroundWriter(lambda item: (time.sleep(0.2), written.append(item)))
    writer.put(1)
    writer.put(2)
    join, calls = writer.thread.join, []

    def interrupted_join(*args):
        if not calls:
            calls.append(1)
            raise Terminated(15)
        return join(*args)

    writer.thread.join = interrupted_join
    with pytest.raises(Terminated):
        writer.close()
    _undo(None, writer, lambda: None)
    assert not writer.thread.is_alive() and written == [1, 2]
