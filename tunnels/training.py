"""Training with tunnels through the shared loop: open (or reorganize) at a step, train, close at a step.

Implements the training protocol of "Escaping Flat Areas via Function-Preserving Structural Network
Modifications" ("Tunnels"), Sections 4.1-4.4 and Appendix B, as a :class:`landscape.train.Callback`.
:class:`TunnelSchedule` runs inside :class:`landscape.train.Trainer`:

* After step ``open_at`` it computes the matrices A on the trainer's current model (a full pass, a
  partial pass or a moving average over the last steps, paper Appendix B), opens tunnels
  (:func:`tunnels.surgery.open_tunnels`) or reorganizes weights (:func:`tunnels.surgery.reorganize`; a pass
  then computes A on the merged network the reorganization opens in, the theory's setting, Sec. 3.2; a moving
  average, gathered before, is the network's before the merge, an approximation), and
  swaps the grown model in with :meth:`Trainer.replace_model`, passing the :class:`TunnelEvent` as the
  event. The trajectory recorder sees the new layout and starts a new segment; the event becomes a tag
  (``{"type": "tunnel", "kind": "open", "step": ..., ...}``) of the next snapshot.
* After step ``close_at`` it closes the same clones (:func:`tunnels.surgery.close_tunnels`) and swaps the
  smaller model in the same way.

Optimizer state, handled explicitly. Parameters change shape at an opening, so the optimizer is
always rebuilt from the trainer's spec (``Trainer.replace_model`` without ``optimizer``): Adam's moment
buffers and step counts start from zero, as the paper does ("we clear the Adam and BatchNorm
accumulation buffers", Sec. 4.4). ``reset_norm_stats=True`` also resets the running statistics of
every BatchNorm (the "BatchNorm accumulation buffers"; only eval-mode outputs depend on them).

Learning-rate warm-up. The paper "reduce[s] the learning rate by a factor of 10 for 20 steps as a
warmup procedure for Adam" (App. B.3), after every opening and equally in the control runs. Here the
factor ramps linearly: the ``k``-th step after the event (``k = 0 .. warmup_steps - 1``) uses
``lr * (warmup_start + (1 - warmup_start) * k / warmup_steps)``, then the base ``lr`` again
(``warmup_start=0.1``, ``warmup_steps=20`` by default; ``warmup_steps=0`` disables it). The callback
scales every ``param_group["lr"]`` of the fresh optimizer and restores the base values afterwards, so a
learning-rate scheduler attached elsewhere should not be combined with it.

Control runs. ``action="restart"`` does no surgery: at ``open_at`` it only rebuilds the optimizer
and warms up, which is what the paper's control runs get.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.data import iterate_batches
from landscape.train import Callback, StepEvent, Trainer
from tunnels.sites import TunnelEvent, resolve_site
from tunnels.split import LambdaMode, SplitAccumulator, SplitStats, StatsMethod, split_stats
from tunnels.surgery import _closest_pairs, close_tunnels, close_units, open_tunnels, reorganize

__all__ = ["ScheduleAction", "TunnelSchedule"]

LossFn = Callable[[Tensor, Tensor], Tensor]


class ScheduleAction(str, enum.Enum):
    """What :class:`TunnelSchedule` does at ``open_at``."""

    OPEN = "open"  # open tunnels (the network grows), Sec. 4.1, 4.4
    REORGANIZE = "reorganize"  # merge pairs and reopen in their slots (architecture unchanged), Sec. 4.3
    RESTART = "restart"  # no surgery: optimizer reset and warm-up only (the paper's control runs)


class TunnelSchedule(Callback):
    """Open (or reorganize) tunnels at one step and close them at a later one, inside a :class:`Trainer`.

    Args:
        open_at: Open after this many optimizer steps (paper: 50 in Sec. 4.1, 5000 in Sec. 4.4).
        units: For ``"open"``: the units spec of :func:`tunnels.surgery.open_tunnels` (an int ``n``: the
            ``n`` largest-rho units over all sites; or ``{producer: n or [units]}``). For ``"reorganize"``:
            ``{producer: n_merges}`` (one site; see :func:`tunnels.surgery.reorganize`).
        close_at: Close the opened clones after this many steps (``None``: keep them). Only with ``"open"``.
        action: ``"open"``, ``"reorganize"`` or ``"restart"`` (see :class:`ScheduleAction`).
        t: Distance of lambda from ``1/2`` (``lambda_t = 1/2 + t * direction``).
        mode: Lambda mode: ``"proposed"``, ``"random"``, ``"constant"`` or ``"half"``.
        stats: How A is estimated: ``"full"`` (a pass over ``stats_data``), ``"partial"`` (its first
            ``max_batches`` batches) or ``"ema"`` (a moving average over the ``ema_steps`` steps before
            opening, each on a fresh minibatch of ``stats_data`` at the then-current weights). A reorganization's
            pass runs on the merged network (see :func:`tunnels.surgery.reorganize`).
        stats_data: Data for A: a tensor pair or iterable of batches (default: the trainer's data).
        loss_fn: Batch-mean loss for A (default: the trainer's).
        max_batches: Batches of a partial pass.
        ema_steps: Steps averaged by ``"ema"``.
        ema_decay: Decay of the ``"ema"`` average.
        stats_batch_size: Batch size when ``stats_data`` is a tensor pair.
        stats_train: Compute A in train mode (BatchNorm batch statistics).
        warmup_steps: Steps of linear learning-rate warm-up after each opening (paper: 20; 0: none).
        warmup_start: Learning-rate factor of the first warm-up step (paper: 0.1, "a factor of 10").
        warmup_on_close: Also warm up after closing.
        reset_norm_stats: Reset every BatchNorm's running statistics at the opening (paper, Sec. 4.4).
        seed: Seed of random lambda directions.

    Attributes:
        events_: ``[(step, TunnelEvent)]`` applied so far (a restart records ``(step, None)``).
        open_event_: The opening event (needed to close).
        stats_: The :class:`~tunnels.split.SplitStats` used at the opening.

    Raises:
        ValueError: On an unknown action / mode / stats method, or ``close_at <= open_at``.

    Example:
        >>> X, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> sched = TunnelSchedule(open_at=2, units={"0": 1}, close_at=4, warmup_steps=0)
        >>> tr = Trainer(net, (X, y), optimizer="sgd", optimizer_kwargs={"lr": 0.1}, steps=6, callbacks=[sched])
        >>> _ = tr.fit()
        >>> [ev.kind for _, ev in sched.events_], tr.model[0].out_features
        (['open', 'close'], 4)
    """

    def __init__(
        self,
        open_at: int,
        units: Any = 1,
        *,
        close_at: int | None = None,
        action: ScheduleAction | str = ScheduleAction.OPEN,
        t: float = 1.0,
        mode: LambdaMode | str = LambdaMode.PROPOSED,
        stats: StatsMethod | str = StatsMethod.FULL,
        stats_data: Any = None,
        loss_fn: LossFn | None = None,
        max_batches: int | None = None,
        ema_steps: int = 10,
        ema_decay: float = 0.9,
        stats_batch_size: int | None = 256,
        stats_train: bool = False,
        warmup_steps: int = 20,
        warmup_start: float = 0.1,
        warmup_on_close: bool = False,
        reset_norm_stats: bool = False,
        seed: int | None = None,
    ) -> None:
        self.action = parse_option(ScheduleAction, action)
        self.mode = parse_option(LambdaMode, mode)
        self.stats = parse_option(StatsMethod, stats)
        if open_at < 0:
            raise ValueError(f"open_at must be >= 0, got {open_at}")
        if close_at is not None and (close_at <= open_at or self.action is not ScheduleAction.OPEN):
            raise ValueError(f"close_at={close_at} needs action='open' and close_at > open_at={open_at}")
        if warmup_steps < 0 or not 0.0 < warmup_start <= 1.0:
            raise ValueError(f"need warmup_steps >= 0 and 0 < warmup_start <= 1, got {warmup_steps}, {warmup_start}")
        if self.stats is StatsMethod.PARTIAL and (max_batches is None or max_batches < 1):
            raise ValueError("stats='partial' needs max_batches >= 1")
        if self.stats is StatsMethod.EMA and ema_steps < 1:
            raise ValueError(f"stats='ema' needs ema_steps >= 1, got {ema_steps}")
        if self.stats is StatsMethod.EMA and not 0.0 <= ema_decay < 1.0:  # else found only at the first update
            raise ValueError(f"stats='ema' needs 0 <= ema_decay < 1, got {ema_decay}")
        self.open_at, self.close_at, self.units, self.t, self.seed = open_at, close_at, units, float(t), seed
        self.stats_data, self.loss_fn, self.max_batches = stats_data, loss_fn, max_batches
        self.ema_steps, self.ema_decay, self.stats_batch_size, self.stats_train = (
            ema_steps,
            ema_decay,
            stats_batch_size,
            stats_train,
        )
        self.warmup_steps, self.warmup_start, self.warmup_on_close = warmup_steps, float(warmup_start), warmup_on_close
        self.reset_norm_stats = reset_norm_stats
        self._reset_state()

    def _reset_state(self) -> None:
        self.events_: list[tuple[int, TunnelEvent | None]] = []
        self.open_event_: TunnelEvent | None = None
        self.stats_: SplitStats | None = None
        self._acc: SplitAccumulator | None = None
        self._ema_iter: Any = None
        self._warm: tuple[int, list[float]] | None = None  # (step of the event, base lr per group)

    # ----------------------------------------------------------------- hooks
    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._reset_state()
        if self.open_at == 0:
            self._open(trainer)
            self._apply_warmup(trainer, 0)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        step = event.step
        if self._needs_a() and self.stats is StatsMethod.EMA and self.open_at - self.ema_steps < step <= self.open_at:
            self._ema_update(trainer)
        if step == self.open_at:
            self._open(trainer)
        elif self.close_at is not None and step == self.close_at and self.open_event_ is not None:
            new, ev = close_tunnels(trainer.model, self.open_event_)
            new.train(trainer.model.training)
            trainer.replace_model(new, event=ev.to_dict())
            self.events_.append((step, ev))
            self._warm = None
            if self.warmup_on_close:
                self._start_warmup(trainer, step)
        self._apply_warmup(trainer, step)

    # ----------------------------------------------------------------- internals
    def _data(self, trainer: Trainer) -> Any:
        return trainer.data if self.stats_data is None else self.stats_data

    def _loss(self, trainer: Trainer) -> LossFn:
        return trainer.loss_fn if self.loss_fn is None else self.loss_fn

    def _ema_update(self, trainer: Trainer) -> None:
        if self._acc is None:
            self._acc = SplitAccumulator(
                self._loss(trainer), self._sites(trainer.model), decay=self.ema_decay, train=self.stats_train
            )
        batch = self._next_batch(trainer)
        self._acc.update(trainer.model, batch)

    def _next_batch(self, trainer: Trainer) -> tuple[Tensor, Tensor]:
        data = self._data(trainer)
        for _ in range(2):
            if self._ema_iter is None:
                gen = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
                pair = isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor)
                self._ema_iter = (
                    iterate_batches(data, self.stats_batch_size, True, gen) if pair else iter(iterate_batches(data))
                )
            try:
                return next(self._ema_iter)
            except StopIteration:
                self._ema_iter = None
        raise ValueError("stats_data yielded no batch")

    def _sites(self, model: nn.Module) -> list[str] | None:
        if isinstance(self.units, Mapping):
            return list(self.units)
        return None

    def _needs_a(self) -> bool:
        """Whether the event needs the matrices A: lambda_star, units ranked by rho, or a reorganization."""
        if self.action is ScheduleAction.RESTART:
            return False
        explicit = isinstance(self.units, Mapping) and all(not isinstance(v, int) for v in self.units.values())
        return self.mode is LambdaMode.PROPOSED or not explicit or self.action is ScheduleAction.REORGANIZE

    def _compute_stats(self, trainer: Trainer) -> SplitStats | None:
        if not self._needs_a():  # explicit units and a control split: no A needed
            return None
        if self.stats is StatsMethod.EMA:
            if self._acc is None:  # open_at == 0: nothing averaged yet, use one batch
                self._ema_update(trainer)
            return self._acc.stats()  # type: ignore[union-attr]
        max_b = self.max_batches if self.stats is StatsMethod.PARTIAL else None
        data = self._data(trainer)
        return split_stats(
            self._merged(trainer.model) if self.action is ScheduleAction.REORGANIZE else trainer.model,
            data,
            self._loss(trainer),
            self._sites(trainer.model),
            max_batches=max_b,
            train=self.stats_train,
            batch_size=self.stats_batch_size,
        )

    def _open(self, trainer: Trainer) -> None:
        step = trainer.step
        old = trainer.model
        if self.action is ScheduleAction.RESTART:
            new, ev = old, None
            trainer.add_event({"type": "tunnel", "kind": "restart"})
        else:
            stats = self._compute_stats(trainer)
            self.stats_ = stats
            if self.action is ScheduleAction.OPEN:
                new, ev = open_tunnels(old, self.units, t=self.t, mode=self.mode, stats=stats, seed=self.seed)
                self.open_event_ = ev
            else:
                ((site, merges),) = self._reorganized_site().items()
                new, ev = reorganize(old, site, merges, t=self.t, mode=self.mode, stats=stats, seed=self.seed)
            new.train(old.training)
        if self.reset_norm_stats:
            for m in new.modules():
                if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                    m.reset_running_stats()
        # A fresh optimizer from the spec: Adam's moments and step counts start from zero (paper, Sec. 4.4).
        trainer.replace_model(new, event=None if ev is None else ev.to_dict())
        self.events_.append((step, ev))
        self._start_warmup(trainer, step)

    def _reorganized_site(self) -> Mapping[Any, Any]:
        if not isinstance(self.units, Mapping) or len(self.units) != 1:
            raise ValueError("action='reorganize' needs units={producer: n_merges} for one site")
        return self.units

    def _merged(self, model: nn.Module) -> nn.Module:
        """The network a reorganization opens in: ``model`` with its pairs merged (the pairs ``reorganize`` picks)."""
        ((site, merges),) = self._reorganized_site().items()
        s = resolve_site(model, site)
        pairs = _closest_pairs(model, s, merges) if isinstance(merges, int) else merges
        return close_units(model, s, pairs, remove=False)[0]

    def _start_warmup(self, trainer: Trainer, step: int) -> None:
        if self.warmup_steps == 0:
            self._warm = None
            return
        groups = getattr(trainer.optimizer, "param_groups", None)
        if groups is None or not all("lr" in g for g in groups):
            raise ValueError(
                "learning-rate warm-up needs an optimizer with param_groups holding 'lr'; "
                "pass warmup_steps=0 for this optimizer"
            )
        self._warm = (step, [float(g["lr"]) for g in groups])

    def _apply_warmup(self, trainer: Trainer, step: int) -> None:
        """Set the learning rate of the next step (``k = step - event step`` steps after the event)."""
        if self._warm is None:
            return
        start, base = self._warm
        k = step - start
        if k >= self.warmup_steps:
            factor = 1.0
            self._warm = None
        else:
            factor = self.warmup_start + (1.0 - self.warmup_start) * k / self.warmup_steps
        for g, lr in zip(trainer.optimizer.param_groups, base):
            g["lr"] = lr * factor

    def lr_factor(self, k: int) -> float:
        """Learning-rate factor of the ``k``-th step after an opening (``k = 0`` is the first step)."""
        if self.warmup_steps == 0 or k >= self.warmup_steps:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * k / self.warmup_steps
