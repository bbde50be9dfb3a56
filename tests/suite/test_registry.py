"""Plugins are found through entry points only; broken ones are skipped, not fatal."""

import subprocess
import sys
import textwrap

import pytest

from sparsebench import registry
from sparsebench.api import Method, Task
from sparsebench.errors import UsageError


def test_builtins_discovered_through_entry_points():
    from importlib.metadata import entry_points

    declared = {ep.name for ep in entry_points(group="sparsebench.methods")}
    assert {"dense", "magnitude", "wanda"} <= declared
    assert {"dense", "magnitude", "wanda"} <= set(registry.methods().names())
    assert {"perplexity", "lastword"} <= set(registry.tasks().names())
    for _, cls in registry.methods().items():
        assert issubclass(cls, Method) and cls.description and cls.family
    for _, cls in registry.tasks().items():
        assert issubclass(cls, Task)


def test_unknown_name_suggests_closest():
    with pytest.raises(UsageError, match="Did you mean 'wanda'") as exc:
        registry.methods().get("wandaa")
    assert "magnitude" in str(exc.value)


def _fake_dist(tmp_path, group, lines):
    dist = tmp_path / "thirdparty_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "\n".join(lines) + "\n")
    return tmp_path


def test_third_party_plugin_registers_and_broken_one_is_skipped(tmp_path):
    (tmp_path / "tp_methods.py").write_text(textwrap.dedent("""
        from sparsebench.api import Method, MethodConfig, MethodResult
        class NoopConfig(MethodConfig):
            pass
        class Noop(Method):
            name = "noop"; family = "pruning"; description = "third-party no-op"; Config = NoopConfig
            def apply_(self, model, ctx):
                return MethodResult()
    """))
    _fake_dist(tmp_path, "sparsebench.methods", ["noop = tp_methods:Noop", "broken = tp_missing_module:Thing"])
    code = textwrap.dedent("""
        import warnings
        from sparsebench import registry
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            names = registry.methods().names()
        print(sorted(names)); print(sorted(registry.methods().broken)); print(len(w))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""}, check=True).stdout.splitlines()
    assert "noop" in out[0] and "wanda" in out[0] and "broken" not in out[0]
    assert out[1] == "['broken']"
    assert int(out[2]) >= 1
