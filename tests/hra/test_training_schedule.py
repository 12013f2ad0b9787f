"""The shared training schedule: each trainer's shipped defaults, the rate curve, and the flat option records
(head metrics, controller.json, --options) that stay readable in the names they always had."""

import json
from dataclasses import replace

import pytest

from hra.foundation import ASSETS_DIR
from hra.training.controller import ControllerTrainingOptions
from hra.training.head import HeadTrainingOptions
from hra.training.meta import MetaOptions
from hra.training.schedule import TrainingSchedule, lr_factor, with_schedule


def test_each_trainer_keeps_its_shipped_schedule():
    head = HeadTrainingOptions().schedule
    assert (head.learning_rate, head.warmup_steps, head.min_lr_fraction, head.grad_clip, head.max_batch_frames,
            head.weight_decay) == (1e-2, 4, 0.1, 1.0, 2400, 0.0)
    joint = ControllerTrainingOptions()
    assert joint.controller_lr == 2e-3
    assert (joint.schedule.learning_rate, joint.schedule.warmup_steps, joint.schedule.min_lr_fraction,
            joint.schedule.grad_clip, joint.schedule.max_batch_frames) == (3e-3, 20, 0.1, 1.0, 2400)
    meta = MetaOptions()
    assert meta.controller_lr == 3e-4 and meta.inner_steps == 4
    assert (meta.inner.learning_rate, meta.inner.warmup_steps, meta.inner.max_batch_frames, meta.inner.grad_clip) == (
        1e-2, 1, 2400, 1.0)
    assert (meta.schedule.learning_rate, meta.schedule.warmup_steps, meta.schedule.min_lr_fraction,
            meta.schedule.grad_clip, meta.schedule.max_batch_frames) == (1e-3, 10, 0.1, 1.0, 2400)


def test_rate_warms_up_then_decays_to_the_floor_or_stays_constant():
    schedule = TrainingSchedule(learning_rate=1.0, warmup_steps=4, min_lr_fraction=0.1)
    assert [schedule.factor(s, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule.factor(4, 20) == pytest.approx(1.0) and schedule.factor(20, 20) == pytest.approx(0.1)
    assert schedule.factor(7, 20) == lr_factor(7, 20, 4, 0.1)
    # min_lr_fraction 1.0 is meta training's inner loop: min(1, (step + 1) / max(1, warmup)), no decay
    for warmup in (0, 1, 3):
        constant = TrainingSchedule(learning_rate=1.0, warmup_steps=warmup, min_lr_fraction=1.0)
        assert [constant.factor(s, 4) for s in range(6)] == [min(1.0, (s + 1) / max(1, warmup)) for s in range(6)]


def test_invalid_schedules_are_refused():
    for bad in ({"learning_rate": 0.0}, {"warmup_steps": -1}, {"min_lr_fraction": 1.5}, {"grad_clip": -1.0},
                {"max_batch_frames": 0}, {"weight_decay": -0.1}):
        with pytest.raises(ValueError):
            TrainingSchedule(**{"learning_rate": 1e-3, "warmup_steps": 1, **bad})
    with pytest.raises(TypeError):
        HeadTrainingOptions(schedule={"learning_rate": 1e-3})


def test_head_records_are_flat_in_the_old_names_and_read_back():
    options = with_schedule(HeadTrainingOptions(head_type="ffn", seed=3), learning_rate=3e-3, max_batch_frames=300)
    record = json.loads(json.dumps(options.to_record()))
    assert "schedule" not in record
    assert record["learning_rate"] == 3e-3 and record["max_batch_frames"] == 300 and record["warmup_steps"] == 4
    assert HeadTrainingOptions.from_record(record) == options
    assert HeadTrainingOptions.from_record({"schedule": {"learning_rate": 3e-3}}).schedule == replace(
        HeadTrainingOptions().schedule, learning_rate=3e-3)


def test_the_shipped_controller_record_reads_into_the_schedule():
    record = json.loads((ASSETS_DIR / "controller.json").read_text())["options"]
    options = ControllerTrainingOptions.from_record(record)
    assert options.schedule.learning_rate == record["head_lr"] and options.controller_lr == record["controller_lr"]
    assert options.schedule.warmup_steps == record["warmup_steps"]
    back = options.to_record()
    assert "schedule" not in back and all(back[k] == v for k, v in record.items())
    # what a controller variant's retraining passes: the record with flat overrides
    variant = ControllerTrainingOptions.from_record({**record, "u_init": 0.0, "head_lr": 0.01})
    assert variant.u_init == 0.0 and variant.schedule.learning_rate == 0.01
    with pytest.raises(TypeError):
        ControllerTrainingOptions.from_record({"no_such_field": 1})


def test_meta_records_keep_the_old_flat_names():
    old = {"inner_steps": 2, "inner_lr": 0.02, "inner_warmup": 3, "support_frames": 1200, "query_frames": 800,
           "controller_lr": 1e-4, "prior_lr": 5e-4, "warmup_episodes": 5, "min_lr_fraction": 0.2,
           "max_episodes": 10, "max_seconds": 60.0, "grad_clip": 0.5, "checkpoint_seconds": 30.0, "seed": 1}
    options = MetaOptions.from_record(old)
    assert (options.inner.learning_rate, options.inner.warmup_steps, options.inner.max_batch_frames) == (0.02, 3, 1200)
    assert (options.schedule.learning_rate, options.schedule.warmup_steps, options.schedule.max_batch_frames,
            options.schedule.min_lr_fraction) == (5e-4, 5, 800, 0.2)
    assert options.inner.grad_clip == options.schedule.grad_clip == 0.5  # one clip for both loops, as before
    assert MetaOptions.from_record(options.to_record()) == options
