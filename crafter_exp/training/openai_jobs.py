"""Fine-tuning through an OpenAI-compatible job API (`/files` + `/fine_tuning/jobs`), with the `openai` client.

upload the chat JSONL -> create the job -> poll with backoff (status changes and events printed) -> `ft:...` id.

Interrupt safety: the job id goes into `<output_dir>/openai_job.json` (temp + rename) right after creation, with a
fingerprint of the request (dataset sha256, base model, hyperparameters, endpoint). A rerun with the same request
resumes polling that job instead of paying for a second one; a job that ended `failed`/`cancelled`, or a changed
request, starts a new job. The uploaded file id is recorded too, so an interrupt between upload and creation does not
upload twice. Retries of single requests (429 with Retry-After, 5xx, dropped connections) are the openai client's.

The API key is read from the environment variable named by `api_key_env` and never written: not in the state file,
not in the manifest, not in any exception raised here (service messages are scrubbed of it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from crafter_exp.config import OpenAITrainerConfig
from crafter_exp.errors import StageFailed, UserError
from crafter_exp.files import write_json_atomic

STATE_FILE = "openai_job.json"
TERMINAL = ("succeeded", "failed", "cancelled")
EVENTS_PAGE = 100
MAX_EVENTS_PER_POLL = 1000  # a resumed long job may have thousands of metrics events; older ones are skipped
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
CHAT_FORMATS = ("openai_chat", "openai_tools")  # filter.format values whose lines are OpenAI chat examples


class FineTuneJobError(StageFailed):
    """The service refused a request or the job ended failed/cancelled (message = the service's, key scrubbed)."""

    def __init__(self, message: str, result: Optional[JobResult] = None) -> None:
        super().__init__(message)
        self.result = result
        """The job as last seen, when there was one (so a stage can record its id and status)."""


@dataclass
class JobResult:
    job_id: str
    status: str
    fine_tuned_model: Optional[str] = None
    base_model: Optional[str] = None
    base_url: Optional[str] = None
    training_file: Optional[str] = None
    validation_file: Optional[str] = None
    trained_tokens: Optional[int] = None
    error: Optional[str] = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """As the service reports them (resolved `auto` values included)."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """Data of the `metrics` events seen (step, train_loss, ...), oldest first: the service's loss curve."""
    resumed: bool = False
    """Polled a job created earlier (trainer.job_id or the state file) instead of creating one."""
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------- inputs


def api_key(tcfg: OpenAITrainerConfig) -> str:
    key = os.environ.get(tcfg.api_key_env)
    if not key:
        raise UserError(
            f"trainer.api_key_env: environment variable {tcfg.api_key_env} is not set (export your key there)"
        )
    return key


def make_client(tcfg: OpenAITrainerConfig, key: str) -> Any:
    from openai import OpenAI

    for name in ("httpx", "httpx2"):  # one INFO line per poll would drown the status lines (Hydra logs at INFO)
        logging.getLogger(name).setLevel(logging.WARNING)
    return OpenAI(base_url=tcfg.base_url, api_key=key, max_retries=tcfg.max_retries, timeout=tcfg.request_timeout_s)


def validate_chat_jsonl(path: Path, fmt: str = "openai_chat") -> int:
    """Number of examples in a chat-format JSONL; ValueError naming the first bad line.

    A structural check here (each line a JSON object with a non-empty `messages` list of {role, content} including
    an assistant turn), then the filter stage's validator (crafter_exp.export.validate.validate_path) when present.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"trainer dataset: {path} does not exist")
    count = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            problem = _chat_line_problem(raw)
            if problem:
                raise UserError(f"{path}:{lineno}: {problem}")
            count += 1
    if count == 0:
        raise UserError(f"{path}: no examples (empty dataset)")
    _shared_validation(path, fmt)
    return count


def _shared_validation(path: Path, fmt: str) -> None:
    # the filter stage's deeper checks; imported here, not at the top, because the export package loads its writers
    from crafter_exp.config import FilterConfig
    from crafter_exp.export.validate import validate_path

    report = validate_path(path, FilterConfig(format=fmt))
    if report.errors:
        raise UserError(f"{path}: {report.error_count} broken line(s); first: {report.errors[0]}")


def _chat_line_problem(raw: bytes) -> Optional[str]:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"not valid JSON ({exc.__class__.__name__}: {exc})"
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        return "expected a JSON object with a non-empty `messages` list"
    for i, msg in enumerate(obj["messages"]):
        if not isinstance(msg, dict) or msg.get("role") not in CHAT_ROLES:
            return f"messages[{i}]: expected an object with role in {'/'.join(CHAT_ROLES)}"
        content, tool_calls = msg.get("content"), msg.get("tool_calls")
        if not (isinstance(content, (str, list)) or (msg["role"] == "assistant" and tool_calls)):
            return f"messages[{i}] ({msg['role']}): missing `content`"
    if not any(m["role"] == "assistant" for m in obj["messages"]):
        return "no assistant message to learn from"
    return None


def find_training_file(dataset_dir: Path) -> Path:
    """The chat JSONL train file of a filter-stage dataset folder (per its manifest.json), or the path itself."""
    dataset_dir = Path(dataset_dir)
    if dataset_dir.is_file():
        return dataset_dir
    manifest_path = dataset_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"trainer dataset: no manifest.json in {dataset_dir} (run stage=filter first)")
    manifest = json.loads(manifest_path.read_text())
    fmt = manifest.get("format", "openai_chat")
    if fmt not in CHAT_FORMATS:
        raise UserError(
            f"trainer=openai needs a chat JSONL dataset; {dataset_dir} has format {fmt!r} "
            f"(rerun the filter with filter.format=openai_chat)"
        )
    files = manifest.get("files") or []
    # (split key, path): dict {split: path}, or a list of paths / {path, split} objects
    named = (
        list(files.items())
        if isinstance(files, dict)
        else [(f.get("split") or f.get("path"), f.get("path")) if isinstance(f, dict) else (f, f) for f in files]
    )
    named = [(str(k), str(v.get("path") if isinstance(v, dict) else v)) for k, v in named]
    train = [p for k, p in named if p.endswith(".jsonl") and not _is_eval_split(k) and not _is_eval_split(p)]
    if not train:
        raise UserError(f"trainer dataset: {manifest_path} lists no training .jsonl file")
    if len(train) > 1:
        raise UserError(f"trainer=openai uploads one training file; {manifest_path} lists {len(train)}: {train}")
    path = Path(train[0])
    return path if path.is_absolute() else dataset_dir / path


def find_validation_file(dataset_dir: Path) -> Optional[Path]:
    """The validation split's chat JSONL of a dataset folder (val.jsonl, written when filter.val_fraction > 0),
    or None when it has none (a single file, or no split)."""
    dataset_dir = Path(dataset_dir)
    manifest_path = dataset_dir / "manifest.json"
    if dataset_dir.is_file() or not manifest_path.is_file():
        return None
    files = json.loads(manifest_path.read_text()).get("files") or []
    named = (
        list(files.items())
        if isinstance(files, dict)
        else [(f.get("split") or f.get("path"), f.get("path")) if isinstance(f, dict) else (f, f) for f in files]
    )
    named = [(str(k), str(v.get("path") if isinstance(v, dict) else v)) for k, v in named]
    val = [p for k, p in named if p.endswith(".jsonl") and (_is_eval_split(k) or _is_eval_split(p))]
    if len(val) > 1:
        raise UserError(f"trainer=openai uploads one validation file; {manifest_path} lists {len(val)}: {val}")
    if not val:
        return None
    path = Path(val[0])
    return path if path.is_absolute() else dataset_dir / path


def _is_eval_split(name: str) -> bool:
    words = Path(name).stem.lower().replace("-", "_").split("_")
    return any(w in ("val", "valid", "validation", "eval", "test") for w in words)


# --------------------------------------------------------------------------------------------- the request


def hyperparameters(tcfg: OpenAITrainerConfig) -> dict[str, Any]:
    hp = {
        k: v
        for k, v in (
            ("n_epochs", tcfg.epochs),
            ("batch_size", tcfg.batch_size),
            ("learning_rate_multiplier", tcfg.learning_rate_multiplier),
        )
        if v is not None
    }
    hp.update(tcfg.extra_hyperparameters)
    return hp


def job_request(tcfg: OpenAITrainerConfig, training_file: str, validation_file: Optional[str] = None) -> dict[str, Any]:
    """Keyword arguments of `client.fine_tuning.jobs.create` (hyperparameters where the chosen API style wants them)."""
    if tcfg.hyperparameters_style not in ("method", "legacy"):
        raise UserError(
            f"trainer.hyperparameters_style must be `method` or `legacy`, not {tcfg.hyperparameters_style!r}"
        )
    hp = hyperparameters(tcfg)
    request: dict[str, Any] = {"model": tcfg.base_model, "training_file": training_file, "seed": tcfg.seed}
    if validation_file:
        request["validation_file"] = validation_file
    if tcfg.suffix:
        request["suffix"] = tcfg.suffix
    if tcfg.hyperparameters_style == "method":
        request["method"] = {"type": "supervised", "supervised": {"hyperparameters": hp} if hp else {}}
    elif hp:
        request["hyperparameters"] = hp
    if tcfg.extra_body:
        request["extra_body"] = dict(tcfg.extra_body)
    return request


def request_fingerprint(tcfg: OpenAITrainerConfig, dataset_sha256: str) -> str:
    """What makes two runs 'the same job': a rerun with the same fingerprint resumes instead of creating."""
    body = {"dataset": dataset_sha256, "base_url": tcfg.base_url, "request": job_request(tcfg, "<file>")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- state file


def read_state(output_dir: Path) -> dict[str, Any]:
    path = Path(output_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError:  # only a hand-edited file can be broken: writes are atomic
        raise UserError(f"{path} is not valid JSON; delete it to start a new job") from None


def write_state(output_dir: Path, state: dict[str, Any]) -> None:
    write_json_atomic(Path(output_dir) / STATE_FILE, state)


# ------------------------------------------------------------------------------------------- entry points


def run_openai_job(
    tcfg: OpenAITrainerConfig,
    dataset_file: Optional[Path],
    output_dir: Path,
    *,
    dataset_format: str = "openai_chat",
    validation_file: Optional[Path] = None,
    log: Callable[[str], None] = print,
) -> JobResult:
    """Fine-tune `tcfg.base_model` on `dataset_file` and wait for the result (or resume / cancel, per config).

    `tcfg.job_id` set: poll that job (no upload). `tcfg.cancel`: cancel the job and return. Otherwise resume the job
    recorded in `<output_dir>/openai_job.json` when it was made from the same request, else upload and create.
    `validation_file` (the dataset's val.jsonl) is checked like the training file and sent as the job's
    validation_file (the service then reports validation loss).
    Raises ValueError/FileNotFoundError for bad input before any request, FineTuneJobError when the service refuses
    or the job fails, TimeoutError after `timeout_s` of polling (the job keeps running; a rerun resumes it).
    """
    key = api_key(tcfg)
    output_dir = Path(output_dir)
    if tcfg.cancel:
        return cancel_openai_job(tcfg, output_dir, log=log)
    if tcfg.job_id is None and dataset_file is None:
        raise UserError("trainer=openai: no dataset file given and no trainer.job_id to resume")
    dataset_sha = None
    if tcfg.job_id is None:
        examples = validate_chat_jsonl(Path(dataset_file), dataset_format)
        dataset_sha = file_sha256(Path(dataset_file))
        log(f"dataset {dataset_file}: {examples} examples, sha256 {dataset_sha[:12]}")
        if validation_file is not None:
            val_examples = validate_chat_jsonl(Path(validation_file), dataset_format)
            log(f"validation {validation_file}: {val_examples} examples")
    job_request(tcfg, "<file>")  # bad style -> ValueError before any request

    client = make_client(tcfg, key)
    started = time.monotonic()
    with _scrubbed(key, tcfg.base_url):
        if tcfg.job_id is not None:
            job_id, resumed = tcfg.job_id, True
            if not read_state(output_dir).get("job_id"):  # never overwrite the record of another job
                write_state(output_dir, {"job_id": job_id, "base_url": tcfg.base_url, "status": None})
        else:
            job_id, resumed = _resume_or_create(
                client,
                tcfg,
                Path(dataset_file),
                dataset_sha,
                output_dir,
                log,
                validation_file=Path(validation_file) if validation_file else None,
            )
        if not tcfg.wait:
            job = client.fine_tuning.jobs.retrieve(job_id)
            log(f"job {job_id}: {job.status} (trainer.wait=false: not polling; rerun to resume)")
            return _result(job, tcfg, resumed, started)
        try:
            job, metrics = _poll(client, job_id, tcfg, log)
        except KeyboardInterrupt:
            log(
                f"interrupted: job {job_id} keeps running on the service; rerun the same command to resume polling, "
                f"or cancel it with trainer.job_id={job_id} trainer.cancel=true"
            )
            raise
    _record_status(output_dir, job_id, job.status)
    result = _result(job, tcfg, resumed, started, metrics)
    if job.status != "succeeded":
        message = f"fine-tuning job {job_id} {job.status}: {result.error or 'no error message'}"
        raise FineTuneJobError(_scrub(message, key), result)
    log(
        f"job {job_id} succeeded: fine-tuned model {result.fine_tuned_model}"
        + (f" ({result.trained_tokens} trained tokens)" if result.trained_tokens else "")
    )
    return result


def cancel_openai_job(
    tcfg: OpenAITrainerConfig, output_dir: Optional[Path] = None, *, log: Callable[[str], None] = print
) -> JobResult:
    """Cancel `tcfg.job_id` (or the job in the state file); a job already ended is reported, not an error."""
    key = api_key(tcfg)
    job_id = tcfg.job_id or (read_state(output_dir).get("job_id") if output_dir else None)
    if not job_id:
        raise UserError("trainer.cancel=true needs trainer.job_id=<ftjob-...> (no job recorded in the output folder)")
    client = make_client(tcfg, key)
    started = time.monotonic()
    with _scrubbed(key, tcfg.base_url):
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            log(f"job {job_id} already {job.status}; nothing to cancel")
        else:
            job = client.fine_tuning.jobs.cancel(job_id)
            log(f"job {job_id}: cancel requested, status {job.status}")
    if output_dir is not None and read_state(output_dir).get("job_id") == job_id:
        _record_status(output_dir, job_id, job.status)
    return _result(job, tcfg, True, started)


# ------------------------------------------------------------------------------------------------ internals


def _upload(
    client: Any, path: Path, sha: str, state: dict[str, Any], key: str, sha_key: str, log: Callable[[str], None]
) -> str:
    """The file id of `path` on the service: the one recorded in `state[key]` when it was uploaded from the same
    content (`state[sha_key]`) and the service still has it, else a new upload."""
    file_id = state.get(key) if state.get(sha_key) == sha else None
    if file_id and not _file_exists(client, file_id):
        file_id = None
    if file_id:
        log(f"reusing uploaded file {file_id}")
        return file_id
    with path.open("rb") as fh:
        file_id = client.files.create(file=(path.name, fh, "application/jsonl"), purpose="fine-tune").id
    log(f"uploaded {path.name} as {file_id}")
    return file_id


def _resume_or_create(
    client: Any,
    tcfg: OpenAITrainerConfig,
    dataset_file: Path,
    dataset_sha: str,
    output_dir: Path,
    log: Callable[[str], None],
    validation_file: Optional[Path] = None,
) -> tuple[str, bool]:
    val_sha = file_sha256(validation_file) if validation_file is not None else None
    # the validation file is part of what makes the job (a run without one keeps its earlier fingerprint)
    fingerprint = request_fingerprint(tcfg, dataset_sha if val_sha is None else f"{dataset_sha}+{val_sha}")
    state = read_state(output_dir)
    if state.get("fingerprint") == fingerprint and state.get("job_id"):
        # a running job is always resumed (paying twice is never wanted); a finished one unless retrain asks anew
        ended = ("failed", "cancelled", "succeeded") if tcfg.retrain else ("failed", "cancelled")
        if state.get("status") not in ended:
            log(f"resuming job {state['job_id']} recorded in {output_dir / STATE_FILE}")
            return state["job_id"], True
        log(
            f"previous job {state['job_id']} ended {state['status']}; creating a new one"
            + (" (trainer.retrain=true)" if state["status"] == "succeeded" else "")
        )
    elif state.get("job_id") and state.get("status") not in TERMINAL:
        log(
            f"note: {output_dir / STATE_FILE} names job {state['job_id']} made from a different dataset or config; "
            f"it is left as is (cancel with trainer.job_id={state['job_id']} trainer.cancel=true)"
        )

    file_id = _upload(client, dataset_file, dataset_sha, state, "training_file", "dataset_sha256", log)
    uploads = {"training_file": file_id, "dataset_sha256": dataset_sha, "base_url": tcfg.base_url}
    if file_id != state.get("training_file"):
        write_state(output_dir, uploads)
    val_id = None
    if validation_file is not None and val_sha is not None:
        val_id = _upload(client, validation_file, val_sha, state, "validation_file", "validation_file_sha256", log)
        uploads = {**uploads, "validation_file": val_id, "validation_file_sha256": val_sha}
        if val_id != state.get("validation_file"):
            write_state(output_dir, uploads)

    job = client.fine_tuning.jobs.create(**job_request(tcfg, file_id, val_id))
    # the job costs money from here on: record it before anything else can fail
    write_state(
        output_dir,
        {
            "job_id": job.id,
            "status": job.status,
            "fingerprint": fingerprint,
            **uploads,
            "base_model": tcfg.base_model,
            "created_at": job.created_at,
        },
    )
    log(f"created job {job.id} ({tcfg.base_model}, hyperparameters {hyperparameters(tcfg) or 'service defaults'})")
    return job.id, False


def _file_exists(client: Any, file_id: str) -> bool:
    from openai import NotFoundError

    try:
        client.files.retrieve(file_id)
        return True
    except NotFoundError:
        return False


def _poll(client: Any, job_id: str, tcfg: OpenAITrainerConfig, log: Callable[[str], None]) -> tuple[Any, list]:
    """Poll until the job ends; print status changes and new events.

    The interval grows by `poll_backoff` after each poll up to `poll_max_interval_s`, and starts over at a status
    change (metrics events arrive at every step of a running job, so they do not count as news).
    """
    deadline = time.monotonic() + tcfg.timeout_s
    interval = tcfg.poll_interval_s
    seen: set[str] = set()
    metrics: list[dict[str, Any]] = []
    status = None
    bar = None
    try:
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            changed = job.status != status
            if changed:
                log(f"job {job_id}: {status or 'status'} -> {job.status}" if status else f"job {job_id}: {job.status}")
                status = job.status
            for event in reversed(list(_new_events(client, job_id, seen))):
                data = dict(event.data or {}) if isinstance(event.data, dict) else {}
                if event.type == "metrics" and data:
                    metrics.append(data)
                    bar = _progress(bar, data)
                else:
                    _write(bar, log, f"  [{event.level}] {event.message}")
            if status in TERMINAL:
                return job, metrics
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {status} after {tcfg.timeout_s:.0f} s; it keeps running — "
                    f"rerun to resume polling"
                )
            interval = tcfg.poll_interval_s if changed else min(interval * tcfg.poll_backoff, tcfg.poll_max_interval_s)
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    finally:
        if bar is not None:
            bar.close()


def _new_events(client: Any, job_id: str, seen: set[str]) -> Iterator[Any]:
    """Events not yet seen, newest first (the API's order; auto-pagination walks back through older pages)."""
    for n, event in enumerate(client.fine_tuning.jobs.list_events(job_id, limit=EVENTS_PAGE)):
        if event.id in seen or n >= MAX_EVENTS_PER_POLL:
            return
        seen.add(event.id)
        yield event


def _progress(bar: Any, data: dict[str, Any]) -> Any:
    from crafter_exp.progress import progress_bar

    total, step = data.get("total_steps"), data.get("step")
    if bar is None:
        bar = progress_bar(total=total, desc="fine-tuning steps", unit="step")
    if isinstance(step, int):
        bar.update(max(0, step - bar.n))
    loss = data.get("train_loss")
    if isinstance(loss, (int, float)):
        bar.set_postfix(train_loss=f"{loss:.4f}")
    return bar


def _write(bar: Any, log: Callable[[str], None], line: str) -> None:
    if bar is not None:
        bar.clear()
    log(line)
    if bar is not None:
        bar.refresh()


def _record_status(output_dir: Path, job_id: str, status: str) -> None:
    state = read_state(output_dir)
    if state.get("job_id") == job_id:
        write_state(output_dir, {**state, "status": status})


def _result(
    job: Any, tcfg: OpenAITrainerConfig, resumed: bool, started: float, metrics: Optional[list] = None
) -> JobResult:
    error = None
    if getattr(job, "error", None) is not None:
        err = job.error
        error = getattr(err, "message", None) or str(err)
        code = getattr(err, "code", None)
        error = f"{error} ({code})" if code else error
    hp = job.hyperparameters.model_dump(exclude_none=True) if getattr(job, "hyperparameters", None) else {}
    return JobResult(
        job_id=job.id,
        status=job.status,
        fine_tuned_model=job.fine_tuned_model,
        base_model=job.model,
        base_url=tcfg.base_url,
        training_file=job.training_file,
        validation_file=getattr(job, "validation_file", None),
        trained_tokens=job.trained_tokens,
        error=error,
        hyperparameters=hp,
        metrics=list(metrics or []),
        resumed=resumed,
        wall_s=time.monotonic() - started,
    )


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


class _scrubbed:
    """Turn the client's API errors into FineTuneJobError with the service's message and no trace of the key."""

    def __init__(self, key: str, base_url: Optional[str] = None) -> None:
        self.key = key
        self.base_url = base_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        import openai

        if exc is None or not isinstance(exc, openai.OpenAIError):
            return False
        status = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) and body.get("message") else str(exc)
        where = f" (HTTP {status})" if status else f" at {self.base_url or 'the default endpoint'}"
        # `from None`: the chained original could carry the key (e.g. an echoed Authorization in a proxy's message)
        raise FineTuneJobError(_scrub(f"fine-tuning service error{where}: {message}", self.key)) from None
