"""Compiled programs are cached by everything they read: program_key keeps every Config field the
step and model read (traced, not listed by hand), and the visible devices are part of the key."""

import dataclasses

import jax

from jaxlstm import step
from jaxlstm.config import Config, load_config
from jaxlstm.survival import survival_config


class Recorder:
    """A Config (or one of its sections) that records every field read through it."""

    def __init__(self, obj, path: str, seen: set):
        self._obj, self._path, self._seen = obj, path, seen

    def __getattr__(self, name):
        prop = getattr(type(self._obj), name, None)
        if isinstance(prop, property):  # Config.loss, n_classes, ...: read the fields through the recorder
            return prop.fget(self)
        value = getattr(self._obj, name)
        if dataclasses.is_dataclass(value):
            return Recorder(value, name, self._seen)
        self._seen.add(f"{self._path}.{name}")
        return value


def _fields_read(config: Config, monkeypatch) -> set:
    """The Config fields that tracing every program of the step reads (no XLA compile)."""
    seen: set = set()
    monkeypatch.setattr(jax.stages.Lowered, "compile", lambda self, compiler_options=None: None)
    step._compile_steps.__wrapped__(Recorder(config, "config", seen), 2, 4, step.ALL + ("train_half", "dropout_half"), 1, 2)
    return seen


def test_no_program_reads_a_field_the_key_leaves_out(monkeypatch, tiny):
    configs = [tiny, load_config(None, {"model.loss": "pinball", "model.dropout": 0.0}),
               load_config(None, {"data.bins": "5,10"}), survival_config(tiny)]
    read = set().union(*(_fields_read(c, monkeypatch) for c in configs))
    left_out = {f"{section}.{name}" for section, names in step.NOT_READ_BY_PROGRAMS.items() for name in names}
    assert not read & left_out, read & left_out
    # the recorder does see what the programs read (so an empty intersection means something)
    assert {"data.look_back", "data.bins", "model.units", "model.loss", "model.quantile", "model.forget_bias",
            "train.learning_rate", "train.patience"} <= read


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return tuple(value) + ((value[-1] if value else 1),)


def test_every_field_outside_the_list_changes_the_key():
    base = Config()
    key = step.program_key(base)
    for section in ("data", "model", "train"):
        part = getattr(base, section)
        for f in dataclasses.fields(part):
            changed = dataclasses.replace(base, **{section: dataclasses.replace(part, **{f.name: _other(getattr(part, f.name))})})
            same = step.program_key(changed) == key
            assert same == (f.name in step.NOT_READ_BY_PROGRAMS[section]), f"{section}.{f.name}"


def test_runs_that_differ_in_unread_fields_share_programs_devices_do_not(tiny, monkeypatch):
    compile_ = lambda cfg: step.compile_steps(cfg, 3, 4, only=("evaluate",))  # noqa: E731
    first = compile_(tiny)
    other_run = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, seed=9, epochs=99, restore_best=True))
    assert compile_(other_run) is first
    assert compile_(dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, learning_rate=0.5))) is not first
    monkeypatch.setattr(jax, "devices", lambda *a: [])  # another set of visible devices
    assert compile_(tiny) is not first
