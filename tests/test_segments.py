"""Long videos in segments (superres.infer.segments / segmented): shots, context, resume, jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("scenedetect")

from conftest import run_main  # noqa: E402
from test_video import decoded, make_video, streams  # noqa: E402

from superres.infer.segments import Unit, find_cuts, plan_segments  # noqa: E402
from superres.infer.video import upscale_video  # noqa: E402
from superres.io import write_image  # noqa: E402
from superres.io.video import probe  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_plan_cuts_at_shots_and_caps_with_context_inside_each_shot():
    units = plan_segments(100, [40, 0, 100, 40], max_frames=25, context=6)
    assert [(u.start, u.end) for u in units] == [(0, 20), (20, 40), (40, 60), (60, 80), (80, 100)]
    assert [(u.before, u.after) for u in units] == [(0, 6), (6, 0), (0, 6), (6, 6), (6, 0)]
    assert all(u.first >= 0 and u.last <= 100 for u in units)
    # context never reaches into another shot, even when a shot is shorter than the context
    short = plan_segments(30, [3, 5], max_frames=2, context=10)
    for u in short:
        shot = max(c for c in (0, 3, 5) if c <= u.start)
        end = min(c for c in (3, 5, 30) if c > u.start)
        assert shot <= u.first and u.last <= end
    assert sum(u.frames for u in short) == 30
    assert plan_segments(7, [], max_frames=300, context=0) == [Unit(0, 0, 7)]


def three_shots(photos) -> list[np.ndarray]:
    """20 + 25 + 18 frames: a pan over one photo, then another, then the first one's other corner, inverted."""
    a, b = (np.asarray(p[..., :3] * 255, np.uint8) for p in (photos["chelsea"], photos["astronaut"]))
    shot1 = [a[i:i + 64, 2 * i:2 * i + 96] for i in range(20)]
    shot2 = [b[100 + i:164 + i, 200 + i:296 + i] for i in range(25)]
    shot3 = [255 - a[200 - i:264 - i, 300:396] for i in range(18)]
    return [np.ascontiguousarray(f) for f in shot1 + shot2 + shot3]


def lossless_video(path: Path, frames: list[np.ndarray]) -> Path:
    """``frames`` in an FFV1 file at 25 frames/s (lossless RGB)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "bgr0"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def test_a_three_shot_clip_is_cut_exactly_at_its_shots(tmp_path, photos):
    frames = three_shots(photos)
    assert find_cuts(frames) == [20, 45]
    # the same from a file: the planner decodes it small and finds the same shots
    src = lossless_video(tmp_path / "shots.mkv", frames)
    logs = []
    upscale_video(src, tmp_path / "out", model="bicubic", outscale=1, segment_frames=12, log=logs.append)
    out = sorted((tmp_path / "out").iterdir())
    assert len(out) == len(frames)


@pytest.mark.skipif(not (SHARED / "video" / "bikes.mp4").exists(), reason="needs ../shared/data/video/bikes.mp4")
def test_real_scene_cuts_are_found():
    from superres.io.video import VideoReader

    reader = VideoReader(SHARED / "video" / "bikes.mp4")
    try:
        cuts = find_cuts(small for small, _ in reader.scan(160))
    finally:
        reader.close()
    assert cuts == [30, 76, 137, 187, 242]  # the five hard cuts the data's README lists


def test_a_recurrent_network_never_sees_the_previous_shot(tmp_path, photos, monkeypatch):
    import torch

    from superres.infer import segmented
    from superres.zoo import create_model

    torch.manual_seed(0)
    desc = create_model("BasicVSR", num_feat=8, num_block=1)
    monkeypatch.setattr(segmented, "temporal_context", lambda enhance, name: 4)  # measured in another test
    frames = [np.ascontiguousarray(f[::2, ::2]) for f in three_shots(photos)[:45]]
    clip, second = tmp_path / "clip", tmp_path / "second"
    for folder, part in ((clip, frames), (second, frames[20:])):
        folder.mkdir()
        for i, f in enumerate(part):
            write_image(folder / f"{i + (20 if folder == second else 0):03d}.png", f)
    upscale_video(clip, tmp_path / "a", model=desc)
    upscale_video(second, tmp_path / "b", model=desc)
    from superres.io import read_rgb8

    for i in range(20, 45):
        np.testing.assert_array_equal(read_rgb8(tmp_path / "a" / f"{i:03d}.png"),
                                      read_rgb8(tmp_path / "b" / f"{i:03d}.png"))


def superres_video(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "superres", "video", *map(str, args)], stderr=subprocess.PIPE,
                            text=True, **kw)


def test_sigkill_then_rerun_reuses_segments_and_jobs_2_gives_the_same_frames(tmp_path, photos):
    """A run killed mid-way (SIGKILL: nothing can clean up) and run again finishes, reusing the finished
    segments, with two jobs; the frames equal one uninterrupted stream's (lossless codec, bicubic)."""
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=60, size=(160, 120))
    dst = tmp_path / "out.mkv"
    args = [src, "-o", dst, "-m", "bicubic", "--outscale", "4", "--codec", "ffv1", "--pix-fmt", "bgr0",
            "--segment-frames", "6"]
    proc = superres_video(*args)
    manifest = tmp_path / ".out.mkv.superres-work" / "manifest.json"
    deadline = time.monotonic() + 120
    done = 0
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            done = len(json.loads(manifest.read_text())["done"])
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None and done >= 2, proc.stderr.read() if proc.poll() is not None else "too slow"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not dst.exists()
    again = superres_video(*args, "--jobs", "2")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    reused = int(err.split("resuming: ")[1].split(" of ")[0])
    assert 2 <= reused < 10, err
    assert not manifest.parent.exists()  # the work folder goes once the output is in place
    reference = tmp_path / "one.mkv"
    upscale_video(src, reference, model="bicubic", outscale=4, codec="ffv1", pix_fmt="bgr0", segment_frames=0)
    got, want = decoded(dst), decoded(reference)
    assert len(got) == len(want) == 60
    for (p, tb, a), (q, tb2, b) in zip(got, want, strict=True):
        assert p * tb == q * tb2
        np.testing.assert_array_equal(a, b)
    assert streams(dst) == streams(reference)  # the sound too, as the single stream copies it


def test_audio_subtitles_vfr_rotation_and_frame_count_survive_segments(tmp_path, photos):
    plain = make_video(tmp_path / "vfr.mp4", photos["astronaut"], frames=23, vfr=True, rotation=90)
    (tmp_path / "subs.srt").write_text("1\n00:00:00,100 --> 00:00:00,300\nHello\n\n"
                                       "2\n00:00:00,400 --> 00:00:00,600\nWorld\n")
    src = tmp_path / "subbed.mkv"
    with av.open(str(plain)) as a, av.open(str(tmp_path / "subs.srt")) as b, av.open(str(src), "w") as out:
        copies = {id(s): out.add_stream_from_template(s) for s in [*a.streams, *b.streams]}
        out.streams.video[0].set_display_rotation(90)
        for container in (a, b):
            for packet in container.demux():
                if packet.dts is not None:
                    packet.stream = copies[id(packet.stream)]
                    out.mux(packet)
    logs = []
    one, many = tmp_path / "one.mkv", tmp_path / "many.mkv"
    upscale_video(src, one, model="bicubic", outscale=2, segment_frames=0)
    result = upscale_video(src, many, model="bicubic", outscale=2, segment_frames=4, log=logs.append)
    assert result.frames == 23 and len(decoded(many)) == 23
    assert [float(p * tb) for p, tb, _ in decoded(many)] == [float(p * tb) for p, tb, _ in decoded(src)]
    assert probe(many).rotation == probe(src).rotation == 90
    a, b = streams(one), streams(many)
    assert b["audio"] == pytest.approx(a["audio"]) and b["video"] == pytest.approx(a["video"])
    with av.open(str(one)) as x, av.open(str(many)) as y:
        for kind in ("audio", "subtitles"):
            ours, theirs = getattr(x.streams, kind)[0], getattr(y.streams, kind)[0]
            assert [(p.pts, bytes(p)) for p in x.demux(ours)] == [(p.pts, bytes(p)) for p in y.demux(theirs)]


def test_a_changed_option_starts_afresh_and_the_same_one_resumes(tmp_path, photos):
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=24, audio=False)
    dst = tmp_path / "out.mp4"

    def stop_after(n: int):
        def progress(done: int, total) -> None:
            if done >= n:
                raise KeyboardInterrupt
        return progress

    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, dst, model="bicubic", outscale=2, segment_frames=8, progress=stop_after(17))
    assert not dst.exists()
    logs = []
    with pytest.raises(KeyboardInterrupt):  # another CRF: what was done does not fit
        upscale_video(src, dst, model="bicubic", outscale=2, segment_frames=8, crf=20, progress=stop_after(9),
                      log=logs.append)
    assert logs[0] == f"{dst}: starting afresh (option crf changed (18 -> 20))"
    assert logs[1].startswith(f"{dst}: stopped; 1 of 3 segments are kept in ") and len(logs) == 2
    logs.clear()
    upscale_video(src, dst, model="bicubic", outscale=2, segment_frames=8, crf=20, log=logs.append)
    assert logs == [f"{dst}: resuming: 1 of 3 segments were done and are reused"]
    # an edited source starts afresh too
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, tmp_path / "b.mp4", model="bicubic", segment_frames=8, progress=stop_after(9))
    os.utime(src, ns=(time.time_ns(), time.time_ns()))
    logs.clear()
    upscale_video(src, tmp_path / "b.mp4", model="bicubic", segment_frames=8, log=logs.append)
    assert logs == [f"{tmp_path / 'b.mp4'}: starting afresh (the source changed)"]


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tmp_path, photos):
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=4, audio=False)
    (tmp_path / "file").write_text("x")
    tic = time.perf_counter()
    out = tmp_path / "file" / "o.mp4"
    result = run_main("video", src, "-o", out, "-q")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "o.mp4" in result.stderr, result.stderr
    assert time.perf_counter() - tic < 30
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(Exception, match="cannot write"):
            upscale_video(src, ro / "o.mp4", model="definitely-not-loaded")


def test_a_pipe_runs_as_one_stream_and_says_so(tmp_path, photos):
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=5, audio=False)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(["sh", "-c", f"cat '{src}' > '{fifo}'"])
    logs = []
    try:
        result = upscale_video(fifo, tmp_path / "out.mkv", model="bicubic", log=logs.append)
    finally:
        feeder.wait(30)
    assert result.frames == 5 and logs and "cannot seek" in logs[0]
    with pytest.raises(ValueError, match="jobs"):
        upscale_video(fifo, tmp_path / "out2.mkv", model="bicubic", jobs=2)


class TwoWayFilter:
    """A stand-in for a bidirectional recurrent network: each output frame mixes every input frame, with
    weights halving at each frame of distance (a forward and a backward recursion), rounded to uint8."""

    scale = 1

    def __call__(self, frames):
        frames = list(frames)
        x = np.stack([f for f, _, _ in frames]).astype(np.float64)
        forward, backward = x.copy(), x.copy()
        for t in range(1, len(x)):
            forward[t] = 0.5 * forward[t - 1] + 0.5 * x[t]
            backward[-t - 1] = 0.5 * backward[-t] + 0.5 * x[-t - 1]
        out = np.clip(np.round((forward + backward) / 2), 0, 255).astype(np.uint8)
        for o, (_, pts, tb) in zip(out, frames, strict=True):
            yield o, pts, tb


def test_temporal_context_is_the_smallest_that_keeps_the_whole_clip_output():
    from superres.infer.context import measure_temporal_context, pan_clip
    from superres.infer.segmented import temporal_context
    from superres.infer.video import video_model

    stream = TwoWayFilter()
    c = measure_temporal_context(stream, limit=16, size=16)
    clip = [(f, i, Fraction(1, 25)) for i, f in enumerate(pan_clip(65, size=16))]
    whole = [o for o, _, _ in stream(iter(clip))][32].astype(int)

    def error(k: int) -> int:
        return int(np.abs([o for o, _, _ in stream(iter(clip[32 - k:33 + k]))][k].astype(int) - whole).max())

    assert 2 < c < 16  # the weights 2^-d fall under half a level after about 8 frames
    assert error(c) <= 1 and all(error(k) > 1 for k in range(c))  # the smallest context within 1/255
    def unbounded(frames):  # every output depends on the clip's length: no context is ever enough
        frames = list(frames)
        for f, pts, tb in frames:
            yield np.full_like(f, 3 * len(frames)), pts, tb

    with pytest.warns(UserWarning, match="looks further"):
        assert measure_temporal_context(unbounded, limit=5, size=16) == 5
    assert temporal_context(video_model("bicubic"), "bicubic") == 0  # image networks need none


def test_interpolation_in_the_video_keeps_the_sound_and_repeats_at_cuts(tmp_path, photos):
    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=12)
    dst = tmp_path / "x2.mp4"
    result = upscale_video(src, dst, model="bicubic", outscale=1, interpolate=2, interpolation="blend")
    times = [float(p * tb) for p, tb, _ in decoded(dst)]
    assert result.frames == 24 and times == pytest.approx([i * 0.02 for i in range(24)])
    assert streams(dst) == pytest.approx(streams(src))  # as long as its sound, which is copied as it was
    # a folder of three shots at 25 fps to 50: no new frame mixes two shots
    frames = three_shots(photos)
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, f in enumerate(frames):
        write_image(folder / f"{i:03d}.png", f)
    out = tmp_path / "out"
    upscale_video(folder, out, model="bicubic", outscale=1, target_fps=50, interpolation="blend")
    from superres.io import read_rgb8

    made = [read_rgb8(p) for p in sorted(out.iterdir())]
    assert len(made) == 2 * len(frames)
    for cut in (20, 45):
        np.testing.assert_array_equal(made[2 * cut - 1], frames[cut - 1])  # repeated, not blended
    assert not np.array_equal(made[2 * 10 - 1], frames[9])  # within a shot: a blend
    result = run_main("video", src, "-o", tmp_path / "slow.mp4", "-m", "bicubic", "--target-fps", "10", "-q")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "lower than the source" in result.stderr


def test_interpolation_in_segments_resumes_and_equals_one_stream(tmp_path, photos):
    """Segments cut inside a shot need the next segment's first frame for their last new frames; at a cut and
    at the end the frame is held: the joined video equals one stream's, frame for frame and pts for pts."""
    frames = three_shots(photos)
    src = lossless_video(tmp_path / "shots.mkv", frames)
    kw = {"model": "bicubic", "outscale": 1, "interpolate": 3, "interpolation": "blend", "codec": "ffv1",
          "pix_fmt": "bgr0"}
    upscale_video(src, tmp_path / "one.mkv", segment_frames=0, **kw)

    def stop_after_two(done: int, total: int, reused: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    dst, logs = tmp_path / "segments.mkv", []
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, dst, segment_frames=8, on_segment=stop_after_two, **kw)
    result = upscale_video(src, dst, segment_frames=8, log=logs.append, **kw)
    assert any("resuming: 2 of 10 segments were done" in line for line in logs)
    one, joined = decoded(tmp_path / "one.mkv"), decoded(dst)
    assert result.frames == len(joined) == len(one) == 3 * len(frames)
    assert [(p, tb) for p, tb, _ in joined] == [(p, tb) for p, tb, _ in one]
    for (_, _, a), (_, _, b) in zip(joined, one, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(joined[3 * 20 - 1][2], frames[19])  # held at the cut, not blended
    assert not np.array_equal(joined[3 * 8 - 1][2], frames[7])  # a segment's edge inside a shot: blended


def test_a_signal_as_a_segment_starts_its_encoder_discards_the_part(tmp_path, photos, monkeypatch):
    """SIGTERM can raise while a segment's encoder thread starts (``Thread.start`` waits for it): the part just
    opened is discarded then, not left open and half-written."""
    from superres.errors import Terminated
    from superres.infer import video
    from superres.io.video import VideoWriter

    src = make_video(tmp_path / "in.mp4", photos["chelsea"], frames=8, size=(64, 48), audio=False)
    discarded = []
    discard, init = VideoWriter.discard, video.BackgroundWriter.__init__

    def spy(self):
        discarded.append(self)
        discard(self)

    def interrupted(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.close()
        raise Terminated(15)

    monkeypatch.setattr(VideoWriter, "discard", spy)
    monkeypatch.setattr(video.BackgroundWriter, "__init__", interrupted)
    with pytest.raises(Terminated):
        upscale_video(src, tmp_path / "out.mkv", model="bicubic", segment_frames=4)
    assert len(discarded) == 1
    assert not list(tmp_path.glob(".out.mkv*"))  # nothing done: the work folder goes
