"""``--engine ray``: the model stages of a command as Ray Data actors (``docs/scale.md``).

Rows (candidates, layouts) go in as a Ray dataset of ``(index, row)``; a :class:`Stage` runs in a
pool of stateful actors (``map_batches`` with ``compute=ActorPoolStrategy(size=workers)``), each
of which builds its models once; results stream back to the driver, which yields them in input
order, so the command writes its output as they come and ``--resume`` works as with
``--engine local``.

Faults: a worker that dies is restarted by Ray and its batch is retried once on the new worker.
A batch that kills its worker a second time is dropped (``DataContext.max_errored_blocks``); when
the dataset is done, its rows are retried one per batch, and a row that kills its worker twice
again alone gets the stage's failure record (an error record naming the reason); the run goes on.

Example (skipped as a doctest: it starts Ray, and the workers must import the stage, which a
class defined here is not; ``tests/test_engine_ray.py`` runs the same with an importable one):
    >>> from clis.engines import EngineConfig
    >>> from clis.engines.stages import Stage
    >>> class Double(Stage):
    ...     def process(self, rows):
    ...         return [{"twice": 2 * row["x"]} for row in rows]
    >>> list(map_stage(Double, {}, [{"x": 1}, {"x": 2}], 1, EngineConfig(name="ray")))  # doctest: +SKIP
    [{'twice': 2}, {'twice': 4}]
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from clis.engines.config import EngineConfig
from clis.engines.stages import ImageStage, Stage, worker_device
from clis.errors import InputError

# What a worker needs of the driver's environment: offline switches, clis caches, thread counts.
FORWARDED_ENV = ("CLIS_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")
# Results held in memory while an earlier row is still missing; the rest wait in a temporary file.
BUFFERED_RESULTS = 4096
WORKER_DIED = "the Ray worker died twice on it, run alone (a crash, or out of memory)"


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 -- ray without its data extra has no Ray Data
    except ImportError:
        raise InputError("--engine ray needs Ray Data, which is not installed: install clis[ray]") from None
    return ray


def start_ray(config: EngineConfig) -> Any:
    """Ray, connected: to ``config.address`` when given, else to a Ray started on this machine
    (sized to it). A Ray already started in this process (tests, notebooks) is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    quiet = {"ignore_reinit_error": True, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if config.address:
            ray.init(address=config.address, **quiet)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(**quiet)  # inside a cluster's job (RayJob, `ray job submit`): Ray finds it there
        else:
            ray.init(include_dashboard=False, **quiet)
    except Exception as exc:  # ConnectionError, TimeoutError, RuntimeError: all mean "no cluster there"
        where = f"--ray-address {config.address}" if config.address else "a local Ray"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{where}: cannot start or reach Ray ({reason[:300]})") from None
    return ray


class _StageActor:
    """The Ray Data callable class: builds the stage once, then maps ``(index, row)`` batches."""

    def __init__(self, stage_cls: type[Stage], stage_kwargs: dict, cwd: Optional[str]):
        # Relative paths (images, models) mean what they mean on the driver; a shared
        # filesystem is assumed on clusters (docs/scale.md).
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        self.stage_cls = stage_cls
        self.stage = stage_cls(**stage_kwargs)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        rows = [json.loads(text) for text in batch["row"]]
        try:
            results = self.stage.process(rows)
            if len(results) != len(rows):
                raise RuntimeError(f"{self.stage_cls.__name__} returned {len(results)} results for {len(rows)} rows")
        except Exception as exc:
            if len(rows) > 1:
                raise  # the block is dropped and its rows retried alone, so one bad row cannot fail the rest
            reason = " ".join(str(exc).split()) or type(exc).__name__
            results = [self.stage_cls.failure(rows[0], f"{type(exc).__name__}: {reason}")]
        return {"index": np.asarray(batch["index"], dtype=np.int64),
                "result": np.array([json.dumps(r) for r in results], dtype=object)}


class _InOrder:
    """Results by index, released in index order; past ``limit`` held, they wait on disk."""

    def __init__(self, limit: int = BUFFERED_RESULTS):
        self.next = 0
        self.limit = limit
        self.memory: dict[int, str] = {}
        self.on_disk: dict[int, tuple[int, int]] = {}
        self.spill: Optional[Any] = None

    def put(self, index: int, text: str) -> None:
        if index < self.next or index in self.memory or index in self.on_disk:
            raise RuntimeError(f"row {index} came back twice")
        if len(self.memory) < self.limit or index == self.next:
            self.memory[index] = text
            return
        if self.spill is None:
            self.spill = tempfile.TemporaryFile()
        data = text.encode("utf-8")
        self.spill.seek(0, os.SEEK_END)
        self.on_disk[index] = (self.spill.tell(), len(data))
        self.spill.write(data)

    def ready(self) -> Iterator[dict]:
        while True:
            if self.next in self.memory:
                text = self.memory.pop(self.next)
            elif self.next in self.on_disk:
                offset, size = self.on_disk.pop(self.next)
                self.spill.seek(offset)
                text = self.spill.read(size).decode("utf-8")
            else:
                return
            self.next += 1
            yield json.loads(text)

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def _remote_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}


def _mapped(ray: Any, dataset: Any, stage_cls: type[Stage], stage_kwargs: dict, batch_size: int,
            config: EngineConfig, blocks: int, in_flight: int = 2) -> Any:
    """``in_flight`` batches are queued on an actor at once (two keep it busy between batches);
    a worker that dies fails every batch queued on it, so rows retried alone go one at a time."""
    import warnings

    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts / max_task_retries yet (only the
        # deprecated **ray_remote_args), and without them a batch that kills its worker is
        # retried forever (Ray Data's default for actor pools is max_task_retries=-1).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        return dataset.map_batches(
            _StageActor,
            fn_constructor_kwargs={"stage_cls": stage_cls, "stage_kwargs": stage_kwargs, "cwd": os.getcwd()},
            # No more actors than batches: each loads the models, and an idle one only costs memory.
            compute=ray.data.ActorPoolStrategy(size=max(1, min(config.workers, blocks)),
                                               max_tasks_in_flight_per_actor=in_flight),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=config.cpus_per_worker,
            num_gpus=config.gpus_per_worker or None,
            runtime_env={"env_vars": _remote_env()},
            # A dead worker is replaced and its batch retried once on the new one.
            max_restarts=-1,
            max_task_retries=1,
        )


def _configured(dataset: Any) -> Any:
    """``dataset`` set to run in input order, to drop (not fail on) a block whose task failed
    for good (its rows are retried alone) and to show no progress bars; only its own
    DataContext (captured when it was made) changes, not the caller's."""
    context = dataset.context
    context.max_errored_blocks = -1
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.preserve_order = True
    return dataset


class _QuietLogs:
    """Each dropped block is logged with its traceback; the failure records carry the reason."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("ray.data")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)


def map_dataset(stage_cls: type[Stage], stage_kwargs: dict, dataset: Any, total: int, batch_size: int,
                config: EngineConfig, rows_of: Optional[Callable[[set[int]], list[dict]]] = None) -> Iterator[dict]:
    """Results of ``stage_cls`` over ``dataset`` (columns ``index``: 0..total-1 and ``row``: JSON
    text), in index order, as they come. See the module docstring for what happens on failures.

    ``rows_of(indices)`` gives the ``(index, row)`` items of the rows to retry alone; by default they
    are read back from ``dataset``. Either way they are few, so the retry is built from a list on
    the driver: a filter task upstream of the actor pool could wait forever for a CPU the actors hold."""
    ray = start_ray(config)
    order = _InOrder()
    seen = bytearray(total)
    if rows_of is None:
        def rows_of(indices: set[int]) -> list[dict]:
            return sorted(_configured(dataset.filter(lambda row: int(row["index"]) in indices)).take_all(),
                          key=lambda item: int(item["index"]))
    try:
        with _QuietLogs():
            blocks = -(-total // max(1, batch_size))
            mapped = _mapped(ray, dataset, stage_cls, stage_kwargs, max(1, batch_size), config, blocks)
            for out in _configured(mapped).iter_rows():
                index = int(out["index"])
                if not 0 <= index < total or seen[index]:
                    raise InputError(f"row index {index}: {'listed twice' if 0 <= index < total else 'outside'} "
                                     f"(indices must be 0..{total - 1}, each once)")
                seen[index] = 1
                order.put(index, out["result"])
                yield from order.ready()
            missing = {i for i in range(total) if not seen[i]}
            if missing:
                # One row per block and per batch: a row that kills its worker takes nothing else along.
                retry = rows_of(missing)
                absent = missing - {int(item["index"]) for item in retry}
                if absent:
                    raise InputError(f"row index {min(absent)}: missing (indices must be 0..{total - 1}, each once)")
                alone = ray.data.from_items(retry, override_num_blocks=len(retry))
                # One at a time per actor: a row queued behind the one that kills the worker would die with it.
                for out in _configured(_mapped(ray, alone, stage_cls, stage_kwargs, 1, config, len(retry),
                                               in_flight=1)).iter_rows():
                    index = int(out["index"])
                    missing.discard(index)
                    order.put(index, out["result"])
                    yield from order.ready()
                for item in retry:
                    if int(item["index"]) in missing:
                        order.put(int(item["index"]), json.dumps(stage_cls.failure(json.loads(item["row"]), WORKER_DIED)))
                yield from order.ready()
    finally:
        order.close()
    if order.next != total:
        raise RuntimeError(f"{total - order.next} of {total} rows did not come back from the Ray workers")


def map_stage(stage_cls: type[Stage], stage_kwargs: dict, rows: Iterable[dict], batch_size: int,
              config: EngineConfig) -> Iterator[dict]:
    """``stage_cls(**stage_kwargs).process`` over ``rows`` (JSON-able dicts listed on the driver), on
    Ray, ``batch_size`` rows per call, one result per row in input order. ``stage_cls`` must be
    importable by the workers (a module-level class)."""
    items = [{"index": index, "row": json.dumps(row)} for index, row in enumerate(rows)]
    if not items:
        return iter(())
    ray = start_ray(config)
    blocks = max(1, -(-len(items) // max(1, batch_size)))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    return map_dataset(stage_cls, stage_kwargs, dataset, len(items), batch_size, config,
                       rows_of=lambda indices: [items[i] for i in sorted(indices)])


def read_candidate_manifest(path: str | Path, config: EngineConfig) -> tuple[Any, int]:
    """A Parquet or JSONL manifest of candidates as ``(dataset, rows)`` for :func:`map_dataset`, read by
    the workers (``ray.data.read_parquet`` / ``read_json``), never listed on the driver.

    Columns: ``index`` (the row's place in the output, 0..rows-1), ``layout_id`` and ``image``.
    The rows go to :class:`ImageStage` with ``layouts_file``."""
    ray = start_ray(config)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: candidate manifest not found")
    suffix = path.suffix.lower() if path.is_file() else ".parquet"
    if suffix == ".parquet":
        dataset = ray.data.read_parquet(str(path))
    elif suffix in (".jsonl", ".json"):
        dataset = ray.data.read_json(str(path), lines=True) if suffix == ".jsonl" else ray.data.read_json(str(path))
    else:
        raise InputError(f"{path}: a candidate manifest is a .parquet file or folder, or a .jsonl file")
    columns = set(dataset.columns())
    lacking = [name for name in ("index", "layout_id", "image") if name not in columns]
    if lacking:
        raise InputError(f"{path}: candidate manifest: column {lacking[0]!r} missing (needs index, layout_id, image)")

    def as_rows(batch: dict) -> dict:
        import numpy as np

        rows = [json.dumps({"layout_id": str(lid), "image": None if image is None else str(image)})
                for lid, image in zip(batch["layout_id"], batch["image"])]
        return {"index": np.asarray(batch["index"], dtype=np.int64), "row": np.array(rows, dtype=object)}

    return dataset.map_batches(as_rows, batch_format="numpy"), dataset.count()


class RayEngine:
    """CLIS-I records of candidates on a Ray actor pool sized by ``config`` (an :class:`EngineConfig`).

    ``stage_cls`` replaces :class:`ImageStage` (the fault tests inject one that crashes).
    """

    def __init__(self, config: EngineConfig, stage_cls: type[Stage] = ImageStage):
        self.config = config
        self.stage_cls = stage_cls

    def stage_kwargs(self, score_config: Any) -> dict:
        """What each actor needs to build its own Scorer: the driver's settings."""
        data = score_config.model_dump(mode="json", by_alias=True, exclude_unset=True)
        data.pop("engine", None)
        if "num_workers" not in data:
            # The loader threads of an actor: its share of the CPUs, not the whole machine's cores.
            data["num_workers"] = max(1, int(self.config.cpus_per_worker))
        device = worker_device(self.config, str(score_config.device))
        return {"config": data} if device is None else {"config": data, "device": device}

    def image_records(self, scorer: Any, candidates: Iterable[Any]) -> Iterator[dict]:
        """What ``scorer.image_scorer.score_candidates(candidates)`` yields, computed on the actors."""
        kwargs = self.stage_kwargs(scorer.config)
        rows = []
        for candidate in candidates:
            if not isinstance(candidate.image, (str, Path)):
                raise InputError("--engine ray scores image files; an in-memory image needs --engine local")
            rows.append({"layout": candidate.layout.model_dump(mode="json", by_alias=True), "image": str(candidate.image)})
        yield from map_stage(self.stage_cls, kwargs, rows, scorer.config.batch_size, self.config)

    def manifest_records(self, score_config: Any, manifest: str | Path, layouts_file: str | Path) -> Iterator[dict]:
        """CLIS-I records of a Parquet/JSONL candidate manifest (see :func:`read_candidate_manifest`),
        in its ``index`` order, for data sets too large to list on the driver."""
        dataset, total = read_candidate_manifest(manifest, self.config)
        kwargs = {**self.stage_kwargs(score_config), "layouts_file": str(Path(layouts_file).resolve())}
        yield from map_dataset(self.stage_cls, kwargs, dataset, total, score_config.batch_size, self.config)
