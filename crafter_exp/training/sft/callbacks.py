"""Trainer callbacks: the time budget, and the progress bar + loss curve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from crafter_exp.training.sft.schedule import ProgressClock

LogFn = Callable[[dict[str, float], int], None]


def build_callbacks(
    clock: ProgressClock,
    max_time_s: Optional[float],
    has_eval: bool,
    log_fn: Optional[LogFn],
    progress: bool,
    curve: list[dict[str, float]],
) -> list[Any]:
    from transformers import TrainerCallback

    from crafter_exp.progress import progress_bar

    class Budget(TrainerCallback):
        """Starts the clock; stops training when the time budget is spent (evaluating + saving that last step)."""

        stopped_by_time = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if max_time_s is not None and clock.elapsed() >= max_time_s and not control.should_training_stop:
                control.should_training_stop = True
                Budget.stopped_by_time = True
                if has_eval:
                    control.should_evaluate = True
                    control.should_save = args.save_strategy != "no"

    class Reporter(TrainerCallback):
        """Progress bar (loss, reply accuracy, tokens/s) and the loss curve to MLflow."""

        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if progress:
                self.bar = progress_bar(total=state.max_steps, desc="train", unit="step", dynamic_ncols=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict[str, Any]] = None, **kw: Any) -> None:
            logs = {
                k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if not logs:
                return
            logs["elapsed_s"] = clock.elapsed()
            curve.append({"step": state.global_step, **logs})
            if log_fn is not None:
                log_fn(logs, state.global_step)
            if self.bar is not None and "loss" in logs:
                post = {"loss": f"{logs['loss']:.3f}"}
                if "reply_accuracy" in logs:
                    post["acc"] = f"{logs['reply_accuracy']:.2f}"
                if clock.elapsed() > 0 and "trained_tokens" in logs:
                    post["tok/s"] = f"{logs['trained_tokens'] / clock.elapsed():.0f}"
                self.bar.set_postfix(post, refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return [Budget(), Reporter()]
