"""adapt/learner.py: every module on the configured device (CPU here, CUDA when present), no hard-coded CPU
in the compute path, unusable devices refused clearly, and the compute budget bounding the learner's CPU
time (measured, not assumed). Tiny random dual model, 28x42 inputs."""
from __future__ import annotations

import copy
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from monother_ros.adapt import OnlineLearner
from monother_ros.adapt.learner import learner_device
from monother_ros.errors import ConfigError

from test_adapt_learner import _config, _fill, dual  # noqa: F401 - the module fixture is reused

ADAPT = Path(__file__).resolve().parent.parent / "monother_ros" / "adapt"


def _devices(module: torch.nn.Module) -> set[torch.device]:
    return {t.device for t in list(module.parameters()) + list(module.buffers())}


def _check_placement(learner: OnlineLearner, device: torch.device) -> None:
    model = learner.model
    for part in (model.student, model.teacher, model.confidence_net, learner._eval_student):
        assert _devices(part) == {device}, type(part).__name__
    states = [v for st in learner._optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    assert states and {v.device for v in states if v.dim() > 0} == {device}  # AdamW moments live with the weights
    # What leaves the learner (hand-over, checkpoints, cached teacher outputs) is on the CPU by design.
    assert {v.device.type for v in learner.running_state.values()} == {"cpu"}


def test_learner_places_teacher_confidence_and_student_on_its_device(dual):  # noqa: F811
    learner = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-3, reject_threshold=1e6), device="cpu")
    _fill(learner)
    assert learner.train_round(budget=False).decision == "accepted"
    _check_placement(learner, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_learner_on_cuda_trains_admits_and_scores_there(dual):  # noqa: F811
    learner = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-3, reject_threshold=1e6), device="cuda")
    decisions = _fill(learner)
    assert "admitted" in decisions and "held_out" in decisions
    assert learner.train_round(budget=False).decision == "accepted"
    _check_placement(learner, torch.device("cuda", torch.cuda.current_device()))


def test_unusable_devices_are_refused_with_a_clear_message(dual):  # noqa: F811
    with pytest.raises(ConfigError, match="not a torch device"):
        learner_device("gpu0")
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match="CUDA"):
        OnlineLearner(copy.deepcopy(dual), _config(), device=missing)
    assert learner_device("cpu") == torch.device("cpu")


# Where the adaptation code may name the CPU: default arguments, copies of weights handed out (hand-over,
# checkpoints), and outputs cached or turned into numpy. Anything else would pin compute to the CPU.
_ALLOWED_CPU = (
    re.compile(r"device: (str \| torch\.device|torch\.device \| str) = \"cpu\""),
    re.compile(r"\.detach\(\)\.to\(\"cpu\", copy=True\)"),
    re.compile(r"\.detach\(\)\.cpu\(\)"),
    re.compile(r"\.float\(\)\.cpu\(\)\.numpy\(\)"),
)


def test_no_hard_coded_cpu_in_the_adaptation_compute_path():
    offending = []
    for path in sorted(ADAPT.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if not re.search(r"cpu", code):
                continue
            rest = code
            for pattern in _ALLOWED_CPU:
                rest = pattern.sub("", rest)
            if re.search(r"\"cpu\"|'cpu'|\.cpu\(|torch\.device\(\"cpu", rest):
                offending.append(f"{path.name}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)


def _thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU time of one thread of this process (Linux /proc), seconds."""
    import os

    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(learner: OnlineLearner, window_s: float) -> tuple[float, float, int]:
    """(learner thread CPU share, whole-process CPU share, steps) over ``window_s`` of background training."""
    learner.start()
    try:
        deadline = time.monotonic() + 60
        while learner.counters["steps"] < 2 and time.monotonic() < deadline:  # past the first step's warm-up
            time.sleep(0.02)
        native = learner._thread.native_id
        t0, c0, p0, s0 = time.monotonic(), _thread_cpu_seconds(native), time.process_time(), learner.counters["steps"]
        time.sleep(window_s)
        t1, c1, p1, s1 = time.monotonic(), _thread_cpu_seconds(native), time.process_time(), learner.counters["steps"]
    finally:
        assert learner.stop(timeout=30)
    wall = t1 - t0
    return (c1 - c0) / wall, (p1 - p0) / wall, s1 - s0


@pytest.mark.slow
def test_duty_cycle_and_step_rate_bound_the_learners_cpu_time(dual):  # noqa: F811
    threads = torch.get_num_threads()
    try:
        # Duty cycle 20 %, one torch thread (so the learner thread's CPU time is all its compute), scoring
        # every 3 steps (its time falls under the budget too).
        duty = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-9, duty_cycle=0.2, max_steps_per_second=0.0,
                                                          num_threads=1, steps_per_round=3))
        _fill(duty, n=9)
        thread_share, process_share, steps = _measure(duty, 8.0)
        assert steps >= 2  # it trained during the window
        assert thread_share <= 0.2 * 1.25 + 0.03, (thread_share, steps)
        assert process_share <= 0.2 * 1.25 + 0.06, (process_share, steps)  # no compute hidden in other threads

        # A step rate: at most 2 steps/s, whatever the duty cycle allows.
        rate = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-9, duty_cycle=1.0, max_steps_per_second=2.0,
                                                          num_threads=1, steps_per_round=3))
        _fill(rate, n=9)
        _, _, rate_steps = _measure(rate, 6.0)
        assert 1 <= rate_steps <= 2.0 * 6.0 + 1, rate_steps

        # Without a budget the same learner takes far more: the bounds above are not vacuous.
        free = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-9, duty_cycle=1.0, max_steps_per_second=0.0,
                                                          num_threads=1, steps_per_round=3))
        _fill(free, n=9)
        free_share, _, free_steps = _measure(free, 4.0)
        assert free_share > thread_share * 1.5, (free_share, thread_share)
        assert free_steps / 4.0 > steps / 8.0, (free_steps, steps)
        print(f"CPU share: duty 0.2 -> thread {thread_share:.3f} / process {process_share:.3f} ({steps} steps in 8 s); "
              f"2 steps/s -> {rate_steps} steps in 6 s; no budget -> thread {free_share:.3f} ({free_steps} steps in 4 s)")
    finally:
        torch.set_num_threads(threads)
