"""A third-party test plugin for the sweep tests: methods that do nothing, raise, hang or
die, and a task that returns a constant, so crash isolation is tested in seconds.

Declared through a real entry point (``sweepcheck-0.1.dist-info/entry_points.txt``): put
this folder on ``PYTHONPATH`` to install it.
"""

import os
import signal
import time

from sparsebench.api import Method, MethodConfig, MethodResult, Metric, Task, TaskConfig


class NoopConfig(MethodConfig):
    tag: int = 0


class Noop(Method):
    name = "sc_noop"
    family = "pruning"
    description = "changes nothing (sweep tests)"
    Config = NoopConfig

    def apply_(self, model, ctx):
        return MethodResult()


class RaiseConfig(MethodConfig):
    pass


class Raise(Method):
    name = "sc_raise"
    family = "pruning"
    description = "raises in apply_ (sweep tests)"
    Config = RaiseConfig

    def apply_(self, model, ctx):
        raise RuntimeError("sweepcheck: boom in apply_")


class SleepConfig(MethodConfig):
    seconds: float = 600.0


class Sleep(Method):
    name = "sc_sleep"
    family = "pruning"
    description = "sleeps past any sensible time limit (sweep tests)"
    Config = SleepConfig

    def apply_(self, model, ctx):
        time.sleep(self.config.seconds)
        return MethodResult()


class DieConfig(MethodConfig):
    pass


class Die(Method):
    name = "sc_die"
    family = "pruning"
    description = "kills its own process, as the out-of-memory killer would (sweep tests)"
    Config = DieConfig

    def apply_(self, model, ctx):
        os.kill(os.getpid(), signal.SIGKILL)


class ConstConfig(TaskConfig):
    pass


class Const(Task):
    name = "sc_const"
    description = "returns a constant (sweep tests)"
    Config = ConstConfig

    def evaluate(self, model, ctx):
        return {"sc_score": Metric(value=1.0, direction="higher")}
