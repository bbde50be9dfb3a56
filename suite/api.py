"""The contract between the harness and its plugins.

Methods and tasks import only this module from the harness. It holds:
- the plugin base classes ``Method`` and ``Task`` and their frozen configs,
- the contexts the harness hands them (``ApplyContext``, ``EvalContext``),
- the typed run description ``RunSpec`` and the stored result ``RunRecord``.

Nothing here imports torch at module level, so validating a spec stays cheap.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

Family = Literal[
    "baseline", "pruning", "quantization", "sparse_attention", "activation_sparsity", "kv_cache"
]
Direction = Literal["lower", "higher", "none"]
KernelChoice = Literal["auto", "ref", "fast"]
Status = Literal["ok", "failed", "skipped"]

SCHEMA_VERSION = 3


class PluginConfig(BaseModel):
    """Frozen, JSON-round-trippable config of a method or task.

    ``version`` is a class constant, bumped whenever the numerics of the plugin change;
    it is written beside the fields so records made by different versions never compare.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PluginConfig:
        data = dict(data)
        data.pop("version", None)
        return cls.model_validate(data)


class MethodConfig(PluginConfig):
    """Base of every ``<Name>Config`` of a method."""


class TaskConfig(PluginConfig):
    """Base of every ``<Name>Config`` of a task."""


class Metric(BaseModel):
    """One measured number with its uncertainty and the direction that is better."""

    model_config = ConfigDict(frozen=True)
    value: float
    stderr: float | None = None
    direction: Direction = "none"
    n: int | None = None
    unit: str | None = None


T = TypeVar("T")
Progress = Callable[..., Iterator[Any]]


def no_progress(iterable: Iterable[T], **_: Any) -> Iterator[T]:
    """The progress hook used when nobody watches (tests, library use)."""
    yield from iterable


def kv_cache_arg(model: Any) -> str | None:
    """The keyword under which ``model``'s forward takes the KV cache, or None.

    transformers 5.25 renamed ``past_key_values`` to ``cache`` (the old name warns and is to
    go in 5.40); earlier versions take only ``past_key_values``. The instance's forward is
    read first, then the class's, so a method that wraps forward in ``(*args, **kwargs)``
    still gets the model's own name."""
    for fwd in (getattr(model, "forward", None), getattr(type(model), "forward", None)):
        try:
            params = inspect.signature(fwd).parameters
        except (TypeError, ValueError):
            continue
        for name in ("cache", "past_key_values"):
            if name in params:
                return name
    return None


@dataclass
class ApplyContext:
    """What a method gets besides the model: calibration token batches and where to run.

    ``calibration`` is a list of LongTensor batches ``[batch, seq_len]`` drawn from the
    calibration split of the shipped text (``None`` for methods that need none).
    ``progress(iterable, desc=..., total=...)`` wraps long loops in a progress bar.
    """

    device: str = "cpu"
    kernel: KernelChoice = "auto"
    calibration: list[torch.Tensor] | None = None
    seed: int = 0
    progress: Progress = no_progress


@dataclass
class EvalContext:
    """What a task gets: the evaluation split of the text and the tokenizer."""

    text: str
    tokenizer: Any
    device: str = "cpu"
    seed: int = 0
    progress: Progress = no_progress


@dataclass
class MethodResult:
    """What ``Method.apply_`` reports: extra metrics and which kernel implementations ran."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    kernels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Method(ABC):
    """A compression method: transforms a model in place.

    Subclasses set the class attributes and implement ``apply_``. Methods never time or
    log themselves; the harness measures the model they leave behind.
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    description: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    needs_calibration: ClassVar[bool] = False
    paper: ClassVar[str | None] = None

    def __init__(self, config: MethodConfig):
        if not isinstance(config, self.Config):
            raise TypeError(f"{self.name} expects {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def unsupported_reason(self, hardware: dict[str, Any]) -> str | None:
        """Return why this method cannot run on ``hardware`` (then the run is skipped), or None."""
        return None

    def check_model(self, model: Any) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` when this config cannot apply to ``model`` (an N:M pattern on a
        width that is not a multiple of M, a layer pattern matching nothing...). The harness
        calls it right after loading, before anything is run or written: a mismatch is bad
        input (exit 2), not a failed run. It must not modify the model."""

    def save_unsupported_reason(self) -> str | None:
        """Why ``--save-model`` cannot write a model this method produced, or None."""
        return None

    @abstractmethod
    def apply_(self, model: Any, ctx: ApplyContext) -> MethodResult:
        """Transform ``model`` in place."""

    def report(self, model: Any) -> dict[str, Metric]:
        """Metrics the method measured on the model *while the tasks ran* (for example the
        activation sparsity it reached on the evaluation text, where ``apply_`` only knew
        the calibration text). Called once by the harness after the tasks and before any
        latency measurement; a method may stop its bookkeeping here. Default: none."""
        return {}

    # Optional: ``save_model(model, tokenizer, path)`` for methods whose model transformers
    # cannot save and reload by itself (packed weights); ``--save-model`` then calls it.


@dataclass(frozen=True)
class Tolerance:
    """How far an accuracy metric may move in its worse direction before the regression
    gate fails: ``relative`` is a fraction of the baseline value, ``absolute`` is in the
    metric's own units (0.01 = one point of an accuracy in [0, 1]).

    Tolerances live on the task class, not in its config: config fields enter the spec
    key, and loosening a gate must not make old records incomparable.
    """

    value: float
    kind: Literal["relative", "absolute"] = "relative"

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.value if self.kind == "relative" else self.value

    def describe(self) -> str:
        return f"{self.value:.3g}" + (" rel" if self.kind == "relative" else " abs")


class Task(ABC):
    """An evaluation task: reads a model, returns metrics. Tasks never modify the model."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    #: gate tolerance per metric this task reports (see ``Tolerance``); others get the default
    tolerances: ClassVar[dict[str, Tolerance]] = {}

    def __init__(self, config: TaskConfig):
        if not isinstance(config, self.Config):
            raise TypeError(f"{self.name} expects {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def check_model(self, model: Any) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` when this config cannot run on ``model`` (a context longer
        than its positions...). Called like ``Method.check_model``: right after loading,
        before anything runs or is written, so a mismatch is bad input (exit 2)."""

    @abstractmethod
    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        """Evaluate ``model``; metric names should be prefixed by nothing task-specific
        (the harness prefixes them with the task name where needed)."""


# --------------------------------------------------------------------------- run spec


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Strict):
    """Which model: an alias (``llama``), a hub id, or a local directory."""

    name: str = "llama"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None


class MethodSpec(_Strict):
    name: str = "dense"
    family: str | None = None  # filled in when the spec is resolved against the registry
    config: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(_Strict):
    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class CalibrationSpec(_Strict):
    """Calibration batches for methods that need activations (Wanda, SparseGPT, GPTQ...)."""

    samples: int = Field(32, ge=1, le=4096)
    seq_len: int = Field(512, ge=8, le=131072)
    batch_size: int = Field(8, ge=1)


DecodePath = Literal["graph", "compile+graph", "compile-tuned+graph", "compile-tuned+gemv+graph",
                     "compile-tuned+gemv+pdl+graph"]
DECODE_PATHS: tuple[str, ...] = get_args(DecodePath)


class MeasureSpec(_Strict):
    """Latency/memory measurement: warm-up, repetitions and the batch x sequence grid."""

    enabled: bool = True
    warmup: int = Field(2, ge=0)
    repetitions: int = Field(5, ge=1)
    batch_sizes: tuple[int, ...] = (1,)
    prefill_lengths: tuple[int, ...] = (128,)
    decode_context: int = Field(128, ge=1)
    decode_tokens: int = Field(16, ge=1)
    # GPU decode step: "graph" = eager forward captured in a CUDA graph; "compile+graph" =
    # torch.compile'd forward (fused elementwise kernels) captured in a CUDA graph;
    # "compile-tuned+graph" = the same with inductor's coordinate-descent tuning of its
    # kernels (about twice the compile time; on an H200 0.76 of the roofline vs 0.69);
    # "compile-tuned+gemv+graph" = that, with one-row linear products through the dense GEMV
    # kernel plugin and one-token SDPA attention through the static-cache decode attention
    # plugin (eager attention without it), the two RMSNorms of each layer inside the fused
    # q/k/v and gate/up GEMVs (sparsebench.measure.decode_kernels, norm_fold);
    # "compile-tuned+gemv+pdl+graph" = that, with every kernel of the step (inductor's and
    # the plugins') launched by programmatic dependent launch (Hopper+): each starts while the
    # one before drains, and the GEMVs start streaming weights before their input is ready.
    decode_path: DecodePath = "graph"
    # Latency only: each decoder layer's q/k/v and gate/up projections computed as one GEMV
    # each (``sparsebench.measure.fuse``), as serving engines do. None = auto: on when
    # latency is measured on a GPU, off on a CPU. While None it is left out of the dumped
    # spec, so the keys of specs written before this field existed do not change.
    fuse_projections: bool | None = None

    @field_validator("batch_sizes", "prefill_lengths")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x < 1 for x in v):
            raise ValueError("must be a non-empty list of positive integers")
        return v

    @model_serializer(mode="wrap")
    def _omit_auto(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.fuse_projections is None:
            data.pop("fuse_projections", None)
        return data


DEFAULT_TASKS: tuple[TaskSpec, ...] = (TaskSpec(name="perplexity"), TaskSpec(name="lastword"))


class RunSpec(_Strict):
    """Everything that defines a run. Its ``key()`` identifies results that may be compared."""

    model: ModelRef = ModelRef()
    method: MethodSpec = MethodSpec()
    tasks: tuple[TaskSpec, ...] = DEFAULT_TASKS
    corpus: str = "default"
    profile: str = "auto"
    calibration: CalibrationSpec | None = CalibrationSpec()
    measure: MeasureSpec = MeasureSpec()
    kernel: KernelChoice = "auto"
    seed: int = 0

    def key(self) -> str:
        """Stable content hash of the spec (resolve it first so defaults are explicit)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- run record


class MetricInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stderr: float | None = None
    direction: Direction = "none"
    n: int | None = None
    unit: str | None = None


class RunRecord(BaseModel):
    """One run's stored result. Written once, never rewritten (see ``sparsebench.store``)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    spec_key: str
    created_at: str
    status: Status
    error: str | None = None
    reason: str | None = None
    spec: dict[str, Any]
    metrics: dict[str, float] = Field(default_factory=dict)
    metric_info: dict[str, MetricInfo] = Field(default_factory=dict)
    samples: dict[str, list[float]] = Field(default_factory=dict)
    # ``{"prefill_b1_s128_ms": {"dense": [...], "method": [...]}}``: the dense baseline's model
    # and this run's model timed in alternating rounds of one process, so that slow drift of
    # the machine hits both alike (``sparsebench.measure.latency.measure_interleaved``). The
    # dense-vs-method comparison uses these where present; ``samples`` stay this model's own.
    interleaved: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    env: dict[str, Any] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)
    kernels: dict[str, str] = Field(default_factory=dict)
    phases: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)

    def add_metric(self, name: str, metric: Metric) -> None:
        self.metrics[name] = float(metric.value)
        self.metric_info[name] = MetricInfo(
            stderr=metric.stderr, direction=metric.direction, n=metric.n, unit=metric.unit
        )
