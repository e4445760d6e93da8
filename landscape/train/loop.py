"""The training loop every trainer in the package runs through.

Persistent, tunnel, optimizer-switch and RK2 training all use :class:`Trainer`: it owns the loop,
the user's code hooks in through a handful of callbacks or by iterating step events. One callback,
:class:`RecordTrajectory`, writes snapshots into a :class:`~landscape.trajectory.store.Trajectory` on a
schedule (every k steps and/or every epoch, plus the initial and final points).

Contracts the other parts rely on:

* The optimizer is stepped as ``optimizer.step(closure)``; the closure zeroes gradients,
  evaluates the loss (plus the optional ``regularizer``) on the *current* minibatch, backpropagates
  and returns the loss, so wrappers that evaluate twice (RK2) see the same batch both times. A stock torch
  optimizer (SGD, Adam, ...) without step pre-hooks, in grad mode, is stepped as ``closure()`` then ``step()``,
  which is the same bitwise (:mod:`landscape.train._stepping`).
* After each step, an optimizer that has ``pop_events()`` (an optimizer switch) hands over
  JSON-compatible event dicts; they become tags of the next recorded snapshot, which is forced at
  that step so the event is never lost. Events a callback raises during the step (its ``on_step_end``
  or ``on_epoch_end``) join the same step's ``StepEvent.events``.
* Callbacks may swap the model mid-run (a tunnel opening) with :meth:`Trainer.replace_model`;
  the recorder notices the new layout and the trajectory starts a new segment.

The trainer works on a deep copy of the model it is given: the caller's model is the initial point
and stays untouched; the trained model is ``trainer.model``. The events and callbacks live in
:mod:`landscape.train.callbacks`, what the loop measures in :mod:`landscape.train.metrics`.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from landscape._loss import ignored_label, sum_reduced, weighted_count, weighted_form
from landscape._options import check_count, check_int, parse_option, shows_forwarded
from landscape.functional import model_output
from landscape.train._data import DataLike, _as_tensors, _batches, _check_pair, _problem_data, general_data
from landscape.train._progress import Progress
from landscape.train._stepping import closure_first, global_pre_hooks, tracking
from landscape.train.callbacks import (
    Callback,
    EpochEvent,
    NonFiniteLossError,
    OnNonFinite,
    RecordTrajectory,
    StepEvent,
    error_event,
)
from landscape.train.metrics import CorrectCounter, evaluate_dataset, resolve_loss
from landscape.validation import is_tensor_pair, validate_training_sets

if TYPE_CHECKING:
    from landscape.problem import Problem
    from landscape.train.optim import RK2

__all__ = ["Trainer", "fit", "seed_everything"]

OptimizerSpec = str | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (dropout, default initializations) for a reproducible run."""
    torch.manual_seed(seed)


def _one(y: Tensor) -> float | None:  # a sum-reduced loss's batch weight in the epoch's train_loss
    return 1.0


class Trainer:
    """Train a copy of a model, yielding step events and recording a trajectory.

    Args:
        model: The initial model (never modified; the trainer trains a deep copy, ``self.model``), or a
            :class:`~landscape.problem.Problem` (its model, data and loss, any form it takes, and its ``batch_size``
            unless one is given here; a ``Dataset`` is batched in order as the problem reads it).
        data: Training data: a tensor pair ``(X (N, ...), y (N,))`` or an iterable of ``(X, y)`` batches
            (re-iterated every epoch, e.g. a ``DataLoader``), or of mapping / ``(*inputs, y)`` batches, read as a
            Problem reads them (:class:`~landscape.train._data.GeneralData`; a ``Dataset`` of mappings too).
        loss_fn: Mean-reduced loss ``loss_fn(outputs, targets) -> scalar``, a loss name, or a closure
            ``loss(model, batch)`` as :class:`~landscape.problem.Problem` takes (a ``(sum, count)`` one steps on
            ``sum / count``, its epoch ``train_loss`` weighted by the counts); default cross-entropy for integer
            targets, MSE otherwise (as every analyzer's). ``outputs`` is the model's output under the output rule of
            every analyzer (:func:`landscape.model_output`: a ``ModelOutput``'s logits, a tuple's first element),
            which the training accuracy counts too. A torch loss module with ``reduction="sum"`` is the sum over the
            data, as a Problem reads it: each step's loss is its value on the batch (the batch's sum, whose gradient
            the step follows) and the epoch's ``train_loss`` the sum of those over the epoch (the data's sum, on the
            scale of the evaluation sets' ``<name>_loss``; a regularizer's value is then counted once per batch).
        optimizer: A method name for :func:`landscape.train.optim.make_optimizer` (``"sgd"``, ``"adam"``, ...) or a
            factory ``params -> torch.optim.Optimizer`` (also used to rebuild the optimizer when the model is
            replaced).
        optimizer_kwargs: Hyperparameters for a named optimizer.
        epochs: Number of epochs (one of ``epochs`` / ``steps`` is required; both: whichever ends first).
        steps: Number of optimizer steps.
        batch_size: Minibatch size for tensor-pair data (``None``: full batch).
        shuffle: Reshuffle tensor-pair data every epoch.
        seed: Seeds the global generator (dropout, initial draws) at the start of training and the
            shuffling generator; two runs with one seed are bitwise identical on CPU.
        shuffle_seed: Seed of the shuffling alone (default: ``seed``), e.g. Lipton's runs that share an
            initialization and differ only in data order.
        eval_data: Named evaluation sets, evaluated (eval mode, no grad) at every epoch end.
        regularizer: Extra loss term ``regularizer(model) -> scalar`` added in the closure (e.g. the
            persistent penalty).
        callbacks: Callbacks, called in order.
        trajectory: If given, a :class:`RecordTrajectory` is added for it.
        record_every_steps: Recording schedule by steps for ``trajectory``.
        record_every_epochs: Recording schedule by epochs for ``trajectory``.
        tags: Tags for every recorded snapshot.
        factory: The model's factory reference, stored in ``trajectory``'s metadata (see :class:`RecordTrajectory`);
            checked first to rebuild ``model``'s architecture (:func:`landscape.factory.check_factory`).
        on_nonfinite: ``"raise"`` (default), ``"stop"`` or ``"ignore"`` when the loss is NaN/inf. ``"raise"``
            ends the run at that step as ``"stop"`` does (every callback's ``on_train_end`` runs: the trajectory
            gets its last snapshot, tagged with the event) and then raises :class:`NonFiniteLossError`.
        train_accuracy: Count the running training accuracy of class targets into the epoch metrics
            (``train_accuracy``). ``False`` skips it: the step keeps no outputs and the loop does nothing a
            plain torch loop would not, besides reading the loss (on a small model, a few percent per step).
        progress: Show a tqdm bar over steps.

    Raises:
        InputError: On empty data, NaN/inf in the data or the model's weights, or class labels outside the
            output width; tensor-pair data is checked and cast to the model's dtype here, once, and batched
            data on its first pass (see :mod:`landscape.validation`).

    Example:
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> opt = lambda p: torch.optim.SGD(p, lr=0.1)
        >>> tr = Trainer(net, (X, y), nn.functional.cross_entropy, opt, epochs=2, batch_size=16).fit()
        >>> tr.step, len(tr.history_)
        (8, 2)
    """

    def __init__(
        self,
        model: Problem | nn.Module,
        data: DataLike | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
        optimizer: OptimizerSpec = "sgd",
        *,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        epochs: int | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_seed: int | None = None,
        eval_data: Mapping[str, DataLike] | None = None,
        regularizer: Callable[[nn.Module], Tensor] | None = None,
        callbacks: Sequence[Callback] = (),
        trajectory: Any = None,
        record_every_steps: int | None = None,
        record_every_epochs: int | None = 1,
        tags: Mapping[str, Any] | None = None,
        factory: Any = None,
        on_nonfinite: OnNonFinite | str = OnNonFinite.RAISE,
        train_accuracy: bool = True,
        progress: bool = False,
    ) -> None:
        from landscape.problem import Problem

        given = data = _as_tensors(data)  # before a Problem's data are read (batched there with batch_size)
        eval_data = {k: _as_tensors(d) for k, d in eval_data.items()} if isinstance(eval_data, Mapping) else eval_data
        # kept whole for callbacks that measure its loss (its bn_mode, closure-free loss and dtype): CurvatureRecorder
        self.problem: Problem | None = model if isinstance(model, Problem) else None
        closure = model.closure if isinstance(model, Problem) else None  # None: read from the loss as a Problem does
        if isinstance(model, Problem):  # its model, data and loss
            if data is not None or loss_fn is not None:
                raise TypeError("model is a Problem, which holds its data and loss; pass neither data nor loss_fn")
            batch_size = model.batch_size if batch_size is None else batch_size
            # model assigned last: mypy types each item of the tuple after the assignments before it
            data, loss_fn, model = _problem_data(model, batch_size), model.loss_spec, model.model
        data, self._general = general_data(model, data, loss_fn, batch_size, closure)  # mappings, closures: _data.py
        if data is None:
            raise TypeError("data is missing: pass a landscape.Problem, or the model with data")
        if epochs is None and steps is None:
            raise ValueError("give the length of training: epochs=... or steps=...")
        # integers: epochs=1.5 ran two epochs and steps=2.5 three steps (the loop compares counts with them)
        epochs = None if epochs is None else check_int(epochs, "epochs", least=0)
        steps = None if steps is None else check_int(steps, "steps", least=0)
        batch_size = check_count(batch_size, "batch_size")
        if batch_size is not None and given is not None and not is_tensor_pair(given) and self._general is None:
            warnings.warn(  # it was ignored without a word: the loader's own batches were trained on
                f"batch_size={batch_size} is ignored: it batches tensor-pair data (X, y), and this "
                f"{type(given).__name__} yields its own batches; set the batch size where they are made (the "
                "DataLoader's batch_size) or pass (X, y)",
                UserWarning,
                stacklevel=2,
            )
        if is_tensor_pair(data):
            _check_pair(data, "training data")  # type: ignore[arg-type]
        elif isinstance(data, Tensor):
            raise TypeError("data must be a pair (X, y) or an iterable of (X, y) batches, got a single tensor")
        if eval_data is not None and not isinstance(eval_data, Mapping):  # the sets are named: their metrics' prefix
            raise TypeError(
                f"eval_data must map names to data sets, e.g. eval_data={{'val': (X_val, y_val)}}, got a "
                f"{type(eval_data).__name__}"
            )
        for k, d in (eval_data or {}).items():
            if is_tensor_pair(d):
                _check_pair(d, f"eval_data[{k!r}]")  # type: ignore[arg-type]
        if self._general is None:  # checked and cast to the model's dtype once here, so the loop itself never checks
            loss_fn = resolve_loss(loss_fn, data)
            data, evals = validate_training_sets(model, data, eval_data, loss_fn)
        else:  # checked on the first pass; its problem is what CurvatureRecorder measures
            data, evals, self.problem = self._general.prepare(model, eval_data, self.problem)
        self.initial_model = model
        self.data = data
        self.loss_fn: Any = loss_fn  # a callable (outputs, targets); under GeneralData the loss as given
        self.optimizer_spec = optimizer
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.epochs = epochs
        self.steps = steps
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_seed = seed if shuffle_seed is None else shuffle_seed
        self.eval_data = evals
        self.regularizer = regularizer
        self.callbacks: list[Callback] = list(callbacks)
        if trajectory is not None and factory is not None:
            from landscape.factory import check_factory

            factory = check_factory(factory, model)  # before the reference reaches the store's metadata
        if trajectory is not None:
            self.callbacks.append(
                RecordTrajectory(
                    trajectory,
                    every_steps=record_every_steps,
                    every_epochs=record_every_epochs,
                    tags=tags,
                    factory=factory,
                )
            )
        elif factory is not None:
            raise ValueError("factory= is stored in the trajectory's metadata: give trajectory= too")
        self.trajectory = trajectory
        # A cross-entropy / NLL mean with class weights or ignored targets is a mean over their summed weights:
        # the epoch's running loss then weights each batch by that count, read per batch only when it can differ
        # from the batch size (decided here once for a tensor pair).
        self._weigh_batches = weighted_form(loss_fn) is not None and (
            not is_tensor_pair(data) or weighted_count(loss_fn, data[1]) is not None  # type: ignore[index]
        )
        # A sum-reduced torch loss module is the sum over the data (as Problem and the engine read it): the epoch's
        # train_loss is the sum of its batches' values, each batch weighing 1 (not its size).
        self._sum_loss = sum_reduced(loss_fn)
        self._batch_weight = _one if self._sum_loss else partial(weighted_count, loss_fn)
        if self._general is not None:  # each batch weighs its count: a closure's, class weights', 1 for a sum
            self._weigh_batches, self._batch_weight = True, self._general.batch_weight
        self.on_nonfinite = parse_option(OnNonFinite, on_nonfinite)
        self.train_accuracy = bool(train_accuracy)
        self.progress = progress

        self.model: nn.Module = copy.deepcopy(model)
        self.optimizer: torch.optim.Optimizer | RK2 = self._build_optimizer(self.model)
        self.step = 0
        self.epoch = 0
        self.epoch_progress = 0.0
        self.batches_per_epoch: int | None = self._count_batches()
        self.history_: list[dict[str, float]] = []
        self.last_metrics: dict[str, float] = {}
        self._events: list[dict[str, Any]] = []
        self._stop = False
        self._batch: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))  # the current minibatch, set per step
        self._last_out: Any = None
        self._keep_out = False  # the closure keeps this step's outputs (for the training accuracy)
        self._started = False
        self._nonfinite: NonFiniteLossError | None = None  # raised by on_nonfinite="raise" (its event is tagged)
        self._eval_problems: dict[str, Any] = {}  # an evaluation pair's problem, kept over epochs (_eval_problem)
        self._generator: torch.Generator | None = None  # the shuffling generator, once the run started
        self._rng_end: Tensor | None = None  # the global generator's state where the run ended (a checkpoint's)
        self._resume: Callable[[list[Callback], torch.Generator], None] | None = None  # see landscape.train.checkpoint

    def __repr__(self) -> str:
        # The default repr said nothing: the model's class, the optimizer, the length and batching, how far it got.
        opt = self.optimizer
        groups = getattr(opt, "param_groups", None) or [{}]
        named = self.optimizer_kwargs if isinstance(self.optimizer_spec, str) else {}
        hyper = {**named, "lr": groups[0].get("lr")}  # the current rate (a schedule changes it)
        hyper = {k: v for k, v in hyper.items() if v is not None}
        optim = f"{type(opt).__name__}({', '.join(f'{k}={v!r}' for k, v in hyper.items())})"
        length = ", ".join(f"{k}={v}" for k, v in (("epochs", self.epochs), ("steps", self.steps)) if v is not None)
        batch = "full batch" if self.batch_size is None else f"batch_size={self.batch_size}"
        if not is_tensor_pair(self.data):
            batch = "batches as given"  # batch_size only cuts tensor pairs
        n = self.batches_per_epoch  # the data is wrapped by now: its own type would name the wrapper
        data = (
            f"{len(self.data[0])} samples"  # type: ignore[index]
            if is_tensor_pair(self.data)
            else f"{n} batch{'es' * (n != 1)} per epoch"
            if n is not None
            else "an iterable of batches"
        )
        epochs = f"{self.epoch_progress:.3g}"
        return (
            f"Trainer({type(self.model).__name__}, {optim}, {length}, {batch}, data: {data}, "
            f"trained {self.step} step{'s' * (self.step != 1)} ({epochs} epoch{'s' * (epochs != '1')}))"
        )

    # ----------------------------------------------------------------- helpers
    def _count_batches(self) -> int | None:
        if is_tensor_pair(self.data):
            n = self.data[0].shape[0]  # type: ignore[index]
            return 1 if self.batch_size is None else math.ceil(n / self.batch_size)
        try:
            return len(self.data)  # type: ignore[arg-type]
        except TypeError:
            return None

    def _build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer | RK2:
        params = [p for p in model.parameters() if p.requires_grad]
        spec = self.optimizer_spec
        if not isinstance(spec, str) and not callable(spec):
            raise TypeError(
                f"optimizer must be a method name or a factory params -> Optimizer, got {type(spec).__name__}; "
                "an optimizer instance cannot be used because the trainer trains a copy of the model"
            )
        from landscape.train.optim import make_optimizer

        return tracking(
            make_optimizer(spec, params, **self.optimizer_kwargs) if isinstance(spec, str) else spec(params), model
        )

    def replace_model(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        event: Mapping[str, Any] | None = None,
    ) -> None:
        """Swap the model being trained (e.g. after opening a tunnel) from a callback.

        Args:
            model: The new model (trained in place from now on).
            optimizer: Its optimizer; default: a fresh one from the optimizer spec (this clears state such
                as Adam's moments, as the Tunnels paper does).
            event: A JSON-compatible event recorded as a tag of the next snapshot (which is forced).
        """
        self.model = model
        self.optimizer = tracking(optimizer, model) if optimizer is not None else self._build_optimizer(model)
        if event is not None:
            self._events.append({"step": self.step, **dict(event)})

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Record a JSON-compatible event at the current step (forces a snapshot)."""
        self._events.append({"step": self.step, **dict(event)})

    def drain_events(self) -> list[dict[str, Any]]:
        """Hand over (and forget) events raised since the last step; used by recorders at the end."""
        out, self._events = self._events, []
        return out

    def stop(self) -> None:
        """Ask the loop to stop after the current step (callable from a callback)."""
        self._stop = True

    def _closure(self) -> Tensor:
        # One bound method for the whole run (no closure object per step); the batch is ``self._batch``.
        x, y = self._batch
        self.optimizer.zero_grad(set_to_none=True)
        if self._general is not None:  # a normalized batch of any form (x), the loss a hand-written loop computes
            loss, out = self._general.step_loss(self.model, x)
        else:
            out = self.model(x)
            if not isinstance(out, Tensor):  # the output rule, as every analyzer and the epoch's evaluation apply it
                out = model_output(out)
            loss = self.loss_fn(out, y)
        if self.regularizer is not None:
            loss = loss + self.regularizer(self.model)
        loss.backward()
        if self._keep_out:  # accuracy belongs to the point the step starts from, not an RK2 stage point
            self._keep_out = False
            self._last_out = out  # not detached (a tensor op per step): counted under no_grad, see CorrectCounter
        return loss

    # -------------------------------------------------------------------- loop
    def __iter__(self) -> Iterator[StepEvent]:
        """Run training, yielding a :class:`StepEvent` after every optimizer step.

        Leaving the loop early (``break``, or an error in its body) ends the run at that step: every callback's
        ``on_train_end`` runs, so a recorded trajectory gets the point the model stopped at.
        """
        if self._started:
            raise RuntimeError("this Trainer has already run; build a new one to train again")
        self._started = True
        seed_everything(self.seed)
        gen = self._generator = torch.Generator().manual_seed(self.shuffle_seed)
        total = self.steps
        if self.epochs is not None and self.batches_per_epoch is not None:
            by_epochs = self.epochs * self.batches_per_epoch
            total = by_epochs if total is None else min(total, by_epochs)
        bar = Progress(total) if self.progress else None
        self._last_out = None
        self.model.train()
        begun: list[Callback] = []  # an error in one on_train_begin finishes those that began
        try:
            for cb in self.callbacks:
                if self._resume is None:
                    cb.on_train_begin(self)
                begun.append(cb)
            if self._resume is not None:  # a resumed run: stateless callbacks begin again, the generators restored
                self._resume(begun, gen)
            epoch = self.epoch  # 0, or the epochs a resumed run had finished
            while not self._done(epoch):
                self.epoch = epoch
                yield from self._run_epoch(epoch, gen, bar)
                epoch += 1
        except GeneratorExit:
            # The caller left the loop early (a break, or an error in its body): the run ends at this step, and
            # the callbacks finish it as at the end (the trajectory's final snapshot, a curvature recorder's last
            # point), so nothing trained is left unrecorded.
            self._end(begun)
            raise
        except BaseException as e:
            # An error inside the run (the model, the loss, a callback, Ctrl-C) ends it as a NaN loss does: the
            # callbacks finish it (the final snapshot, tagged with why; the store flushed), and the error propagates.
            if e is not self._nonfinite:  # the NaN path tagged its own event
                self._events.append(error_event(self.step, e))
            self._end(begun, failed=e)
            raise
        finally:
            if bar is not None:
                bar.close()
        self._end(begun)

    def _end(self, callbacks: Sequence[Callback], failed: BaseException | None = None) -> None:
        self._rng_end = torch.get_rng_state()  # before the hooks: what the next step would have drawn from
        for cb in callbacks:
            if failed is None:
                cb.on_train_end(self)
                continue
            try:  # after a failure every callback still ends the run, and the failure is what propagates
                cb.on_train_end(self)
            except Exception as e:
                warnings.warn(f"{type(cb).__name__}.on_train_end failed after {failed!r}: {e!r}", stacklevel=4)

    def _run_epoch(self, epoch: int, gen: torch.Generator, bar: Progress | None) -> Iterator[StepEvent]:
        # The per-step path does what a plain loop does (one optimizer step) plus one tensor op, the float of
        # the loss (for the NaN check, the running mean and the event), and Python bookkeeping. The training
        # accuracy is counted in chunks of steps (see CorrectCounter); callbacks and events cost nothing when absent.
        run_loss, run_n, run_w = 0.0, 0, 0.0
        weigh, batch_weight = self._weigh_batches or self._sum_loss, self._batch_weight
        correct = CorrectCounter(ignored_label(self.loss_fn))
        outs, ys = correct.outs, correct.ys
        n_batches = self.batches_per_epoch
        closure = self._closure
        keep = self.train_accuracy
        isfinite = math.isfinite
        ev: StepEvent | None = None
        finished = False
        pop_owner: Any = None
        pop: Callable[[], Iterable[dict[str, Any]]] | None = None
        first, hooks, grad_on = False, global_pre_hooks(), torch.is_grad_enabled
        for b, batch in enumerate(_batches(self.data, self.batch_size, self.shuffle, gen)):
            self._batch = batch
            self._last_out, self._keep_out = None, keep
            optimizer: Any = self.optimizer
            if optimizer is not pop_owner:  # read once per optimizer (a switch or a replaced model brings a new one)
                pop_owner, pop, first = optimizer, getattr(optimizer, "pop_events", None), closure_first(optimizer)
                if not callable(pop):
                    pop = None
            if first and grad_on() and not hooks and not optimizer._optimizer_step_pre_hooks:
                loss_t = closure()  # what step(closure) does first (_stepping.py), without entering grad mode again
                optimizer.step()
            else:
                loss_t = optimizer.step(closure)  # the loss tensor our closure returns (torch types it as a float)
            if loss_t is None:
                raise RuntimeError("the optimizer's step(closure) must return the closure's loss")
            loss = loss_t.item() if isinstance(loss_t, Tensor) else float(loss_t)
            self.step += 1
            if bar is not None:
                bar.update()
            if not isfinite(loss):
                # where this step leaves the epoch (set below for a finite loss): the raise mode's last snapshot
                self.epoch_progress = epoch + ((b + 1) / n_batches if n_batches else 0.0)
                self._handle_nonfinite(loss)
            y = batch[1]
            nb = y.shape[0]
            w = nb if not weigh else batch_weight(y)
            w = nb if w is None else w  # None: this batch has neither class weights nor ignored targets
            run_loss += loss * w
            run_n += nb
            run_w += w
            out = self._last_out
            if isinstance(out, Tensor) and not y.is_floating_point():
                outs.append(out)
                ys.append(y)
                if len(outs) >= correct.limit:
                    if correct.limit:
                        correct.reduce()
                    else:
                        correct.set_limit(out)
            events = list(pop()) if pop is not None else []
            if self._events:
                events += self._events
                self._events = []
            finished = n_batches is not None and b + 1 == n_batches
            self.epoch_progress = epoch + ((b + 1) / n_batches if n_batches else 0.0)
            ev = StepEvent(self.step, epoch, b, loss, finished, events)  # positional: half the cost of keywords
            # Events a callback raises during this step belong to it: they join its event list (so callbacks after
            # it, the trajectory recorder among them, and the caller see them at the step they happened).
            for cb in self.callbacks:
                cb.on_step_end(self, ev)
                if self._events:
                    events += self._events
                    self._events = []
            if finished:
                # Evaluated after the step's callbacks: a callback may move the model at the epoch's last step (a
                # perturbation, a tunnel), and the epoch's metrics describe the point the epoch-end snapshot holds.
                eev = self._finish_epoch(epoch, run_loss, run_w, run_n, correct.result())
                for cb in self.callbacks:
                    cb.on_epoch_end(self, eev)
                    if self._events:
                        events += self._events
                        self._events = []
            yield ev
            if self._stop or (self.steps is not None and self.step >= self.steps):
                return
        if ev is None:
            if epoch:  # the data was read before: an iterator that cannot be read again
                raise ValueError(
                    f"the training data yielded no batch in epoch {epoch + 1}: it is re-read every epoch, and a "
                    "one-shot iterator (a generator) is exhausted after the first; pass a list of batches or a "
                    "DataLoader"
                )
            raise ValueError("the training data yielded no batch")
        if not finished:  # an iterable of unknown length ran out: the epoch ended after the last step
            eev = self._finish_epoch(epoch, run_loss, run_w, run_n, correct.result())
            for cb in self.callbacks:
                cb.on_epoch_end(self, eev)

    def _finish_epoch(
        self, epoch: int, run_loss: float, run_w: float, run_n: int, run_correct: float | None
    ) -> EpochEvent:
        # run_w: the batches' loss weights (sizes, or summed class weights); run_correct is None when no batch had
        # class targets (regression), else the accuracy over the samples not ignored (CorrectCounter)
        self.epoch_progress = float(epoch + 1)
        train_loss = run_loss if self._sum_loss else run_loss / run_w if run_w else math.nan
        metrics = {"train_loss": train_loss}
        if self.train_accuracy and (run_correct is not None or self._targets_are_classes()):
            metrics["train_accuracy"] = run_correct or 0.0
        for name, d in self.eval_data.items():
            for k, v in evaluate_dataset(self._eval_problem(name, d)).items():
                metrics[f"{name}_{k}"] = v
        self.last_metrics = metrics
        self.history_.append({"epoch": epoch + 1, "step": self.step, **metrics})
        return EpochEvent(epoch=epoch, step=self.step, metrics=metrics)

    def _eval_problem(self, name: str, data: Any) -> Any:
        """An evaluation set's problem: a tensor pair's is kept, its batches checked once (the weights every time)."""
        from landscape.problem import Problem

        kept = self._eval_problems.get(name)  # with_model: the same batches, so the same numbers
        # the loss's form as training read it (a closure named otherwise than "model" is one under loss_form="batch")
        form = "batch" if self._general is not None and self._general.closure else "outputs"
        prob = (
            kept.with_model(self.model)
            if kept
            else Problem(self.model, data, self.loss_fn, loss_form=form, batch_size=1024)
        )
        if is_tensor_pair(data):  # a loader gets a fresh problem every time: it may batch otherwise
            self._eval_problems[name] = prob
        return prob

    def _targets_are_classes(self) -> bool:
        return is_tensor_pair(self.data) and not self.data[1].is_floating_point()  # type: ignore[index]

    def _done(self, epoch: int) -> bool:
        if self._stop:
            return True
        if self.epochs is not None and epoch >= self.epochs:
            return True
        return self.steps is not None and self.step >= self.steps

    def _handle_nonfinite(self, loss: float) -> None:
        msg = (
            f"training loss became {loss} at step {self.step} (epoch {self.epoch}); lower the learning rate, "
            "check the data for NaN/inf, or pass on_nonfinite='stop'/'ignore'. Snapshots recorded so far are kept."
        )
        if self.on_nonfinite is OnNonFinite.RAISE:
            # The last snapshot says why the run ended (STOP mode tags it through the step's events).
            self._events.append({"step": self.step, "event": "nonfinite_loss", "loss": str(loss), "action": "raise"})
            # The run ends here as a stopped run does: __iter__ has every callback finish it (a recorder's last
            # snapshot, a callback's open file or store), as for any error inside the run.
            self._nonfinite = NonFiniteLossError(msg)
            raise self._nonfinite
        if self.on_nonfinite is OnNonFinite.STOP:
            self._events.append({"step": self.step, "event": "nonfinite_loss", "loss": str(loss), "action": "stop"})
            self._stop = True

    def fit(self) -> Trainer:
        """Run training to the end; returns ``self`` (``model``, ``history_``, ``trajectory`` hold the results)."""
        start = time.perf_counter()
        for _ in self:
            pass
        self.fit_time_ = time.perf_counter() - start
        return self


@shows_forwarded(Trainer)
def fit(
    model: nn.Module,
    data: DataLike | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    optimizer: OptimizerSpec = "sgd",
    **kwargs: Any,
) -> Trainer:
    """Train a copy of ``model``; shorthand for ``Trainer(model, data, loss_fn, optimizer, **kwargs).fit()``.

    The signature shows :class:`Trainer`'s keywords (``epochs``, ``steps``, ``batch_size``, ...), read from it.

    Returns:
        The finished :class:`Trainer` (``.model``, ``.history_``, ``.trajectory``).
    """
    return Trainer(model, data, loss_fn, optimizer, **kwargs).fit()
