"""Executors are plugins (entry-point group ``sparsebench.executors``); the local one pins GPUs."""

import pytest

from sparsebench import registry
from sparsebench.errors import UsageError
from sparsebench.sweep import make_executor
from sparsebench.sweep.executor import Executor, signal_reason
from sparsebench.sweep.local import LocalExecutor, visible_gpus


def test_builtin_executors_come_from_entry_points():
    assert {"local", "ray"} <= set(registry.executors().names())  # ray is imported only when used
    assert issubclass(registry.executors().get("local"), Executor)
    with pytest.raises(UsageError, match="Did you mean 'local'"):
        make_executor("locl")


def test_local_executor_runs_one_child_per_visible_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert visible_gpus() == ["2", "5"]
    assert LocalExecutor(logs=tmp_path).slots() == 2
    assert LocalExecutor(workers=1, logs=tmp_path).slots() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and LocalExecutor(logs=tmp_path).slots() == 1


def test_signal_reasons_name_the_likely_cause():
    assert "SIGKILL" in signal_reason(-9) and "out of memory" in signal_reason(-9)
    assert "SIGSEGV" in signal_reason(-11)
    assert "code 3" in signal_reason(3)
