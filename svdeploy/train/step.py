"""The compiled parts of one optimizer step: gradient accumulation, the finishing of the
accumulated gradients (unscale, data-parallel mean, global norm), and the AdamW update.

Three small graphs instead of one with control flow: Python decides between them (update or
skip after an overflow, when to apply the accumulated micro-batches), so each graph is straight
code that compiles once per input shape in GRAPH_MODE.

* :class:`AccumulateGradients` — forward + backward of ``loss × scale`` for one micro-batch;
  gradients are added into float32 accumulators (Parameters that never train).
* :class:`FinishGradients` — accumulators ÷ (scale · micro-batches), averaged over data-parallel
  workers (MindSpore's DistributedGradReducer), written back; returns the global norm (non-finite
  when any gradient is) and the mean loss over the workers.
* :class:`ApplyGradients` — optional clipping by a coefficient computed from that norm, AdamW,
  accumulators zeroed. :class:`ZeroGradients` drops a skipped step's gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from .config import LossScaleConfig, LRSchedulerConfig, OptimizerConfig

# Substrings that mark the U-Net's temporal parameters (sgm VideoUNet): the temporal ResBlocks
# and VideoTransformerBlocks (time_stack), their learned mixing (time_mixer) and the frame
# position embedding MLP (time_pos_embed).
TEMPORAL_MARKERS: Tuple[str, ...] = ("time_stack", "time_mixer", "time_pos_embed")


def is_temporal(name: str) -> bool:
    """Whether a U-Net parameter name belongs to a temporal layer."""
    parts = name.split(".")
    return any(marker in parts for marker in TEMPORAL_MARKERS)


def select_trainable(unet: nn.Cell, temporal_only: bool) -> Tuple[List[str], List[str]]:
    """Mark U-Net parameters trainable or frozen (``requires_grad``); returns (trainable
    names, frozen names) in the cell's order."""
    trainable, frozen = [], []
    for name, param in unet.parameters_and_names():
        train = is_temporal(name) or not temporal_only
        param.requires_grad = train
        (trainable if train else frozen).append(name)
    return trainable, frozen


def uses_weight_decay(shape: Sequence[int]) -> bool:
    """Weight matrices and kernels decay; biases, norm affines and mix factors do not."""
    return len(shape) >= 2


# ---------------------------------------------------------------------------------------------
# Learning rate and loss scale (Python: they change once per step)
# ---------------------------------------------------------------------------------------------
def learning_rate(step: int, cfg: LRSchedulerConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``lr`` over
    ``warmup_steps``, then constant or a cosine from ``lr`` to ``end_lr`` over ``decay_steps``
    (default: the remaining steps), then ``end_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return cfg.lr
    decay = (
        cfg.decay_steps if cfg.decay_steps is not None else max(total_steps - cfg.warmup_steps, 1)
    )
    progress = min(step - cfg.warmup_steps, decay) / decay
    return cfg.end_lr + 0.5 * (cfg.lr - cfg.end_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass
class LossScaler:
    """Dynamic loss scale (MindSpore DynamicLossScaleUpdateCell rules, floor 1)."""

    scale: float
    factor: float
    window: int
    good_steps: int = 0

    @classmethod
    def from_config(cls, cfg: LossScaleConfig) -> "LossScaler":
        return cls(
            scale=float(cfg.loss_scale_value),
            factor=float(cfg.scale_factor),
            window=int(cfg.scale_window),
        )

    def update(self, finite: bool) -> None:
        if not finite:
            self.scale = max(self.scale / self.factor, 1.0)
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps >= self.window:
            self.scale *= self.factor
            self.good_steps = 0

    def state_dict(self) -> Dict[str, float]:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])


def clip_coefficient(norm: float, clip_norm: Optional[float]) -> float:
    """torch.nn.utils.clip_grad_norm_'s factor: min(1, clip_norm / (norm + 1e-6))."""
    if clip_norm is None or not math.isfinite(norm):
        return 1.0
    return min(1.0, clip_norm / (norm + 1e-6))


# ---------------------------------------------------------------------------------------------
# Graph cells. Per-parameter work goes through HyperMap over the parameter tuples: an unrolled
# Python loop over hundreds of parameters exceeds MindSpore's graph call-depth limit.
# ---------------------------------------------------------------------------------------------
_scale_grad = ops.MultitypeFuncGraph("scale_grad")
_assign = ops.MultitypeFuncGraph("assign")
_assign_add = ops.MultitypeFuncGraph("assign_add")
_zero = ops.MultitypeFuncGraph("zero")
_square_sum = ops.MultitypeFuncGraph("square_sum")
_adamw = ops.MultitypeFuncGraph("adamw")


@_scale_grad.register("Tensor", "Tensor")
def _scale_grad_tensor(factor: Tensor, grad: Tensor) -> Tensor:
    return grad * factor


@_assign.register("Tensor", "Tensor")
def _assign_tensor(target: Tensor, value: Tensor) -> Tensor:
    return ops.assign(target, value)


@_assign_add.register("Tensor", "Tensor")
def _assign_add_tensor(target: Tensor, value: Tensor) -> Tensor:
    return ops.assign_add(target, value)


@_zero.register("Tensor")
def _zero_tensor(target: Tensor) -> Tensor:
    return ops.assign(target, ops.zeros_like(target))


@_square_sum.register("Tensor")
def _square_sum_tensor(grad: Tensor) -> Tensor:
    return ops.reduce_sum(ops.square(grad)).reshape(1)


@_adamw.register(
    "Function",
    "Tensor",
    "Tensor",
    "Tensor",
    "Tensor",
    "Tensor",
    "Number",
    "Tensor",
    "Tensor",
    "Tensor",
    "Tensor",
)
def _adamw_update(
    fused: Any,
    lr: Tensor,
    beta1: Tensor,
    beta2: Tensor,
    eps: Tensor,
    decay_ratio: Tensor,
    weight_decay: float,
    param: Tensor,
    m: Tensor,
    v: Tensor,
    grad: Tensor,
) -> Tensor:
    return fused(param, m, v, lr, beta1, beta2, eps, decay_ratio * weight_decay, grad)


class ScaledLoss(nn.Cell):
    """loss × scale, so that the backward pass yields scaled gradients."""

    def __init__(self, loss_net: nn.Cell) -> None:
        super().__init__()
        self.loss_net = loss_net

    def construct(
        self,
        x0: Tensor,
        image_latent: Tensor,
        context: Tensor,
        time_ids: Tensor,
        sigma: Tensor,
        noise: Tensor,
        keep: Tensor,
        scale: Tensor,
    ) -> Tensor:
        return self.loss_net(x0, image_latent, context, time_ids, sigma, noise, keep) * scale


class AccumulateGradients(nn.Cell):
    """One micro-batch: returns the (unscaled) loss; adds the scaled gradients to ``accum``."""

    def __init__(self, loss_net: nn.Cell, params: ParameterTuple, accum: ParameterTuple) -> None:
        super().__init__()
        self.scaled = ScaledLoss(loss_net)
        self.params = params
        self.accum = accum
        self.grad = ops.GradOperation(get_by_list=True)
        self.hyper_map = ops.HyperMap()

    def construct(
        self,
        x0: Tensor,
        image_latent: Tensor,
        context: Tensor,
        time_ids: Tensor,
        sigma: Tensor,
        noise: Tensor,
        keep: Tensor,
        scale: Tensor,
    ) -> Tensor:
        value = self.scaled(x0, image_latent, context, time_ids, sigma, noise, keep, scale)
        grads = self.grad(self.scaled, self.params)(
            x0, image_latent, context, time_ids, sigma, noise, keep, scale
        )
        done = self.hyper_map(_assign_add, self.accum, grads)
        return ops.depend(value / scale, done)


class FinishGradients(nn.Cell):
    """accum ← mean over workers of accum / denominator; returns (global norm, mean loss)."""

    def __init__(
        self, accum: ParameterTuple, reducer: Optional[nn.Cell] = None, world_size: int = 1
    ) -> None:
        super().__init__()
        self.accum = accum
        self.reducer = reducer
        self.distributed = reducer is not None
        self.world_size = float(world_size)
        self.all_reduce = ops.AllReduce() if self.distributed else None
        self.hyper_map = ops.HyperMap()

    def construct(self, denominator: Tensor, loss: Tensor) -> Tuple[Tensor, Tensor]:
        grads = self.hyper_map(ops.partial(_scale_grad, 1.0 / denominator), self.accum)
        if self.distributed:
            grads = self.reducer(grads)
            loss = self.all_reduce(loss) / self.world_size
        done = self.hyper_map(_assign, self.accum, grads)
        total = ops.addn(self.hyper_map(_square_sum, grads))
        norm = ops.depend(ops.sqrt(total.reshape(())), done)
        return norm, loss


class AdamW(nn.Cell):
    """torch.optim.AdamW: bias-corrected moments, decoupled weight decay:

        p ← p·(1 − lr·wd) − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + ε)

    computed by MindSpore's fused AdamWeightDecay kernel (one node per parameter, which keeps
    the graph small), whose update p ← p − lr'·(m/(√v + ε') + wd'·p) has no bias correction;
    it is folded into lr' = lr·√(1−β2ᵗ)/(1−β1ᵗ), ε' = ε·√(1−β2ᵗ), wd' = wd·lr/lr'.
    State: exp_avg (m), exp_avg_sq (v), step (t).
    """

    def __init__(
        self,
        params: ParameterTuple,
        decay: Sequence[bool],
        betas: Tuple[float, float],
        eps: float,
        weight_decay: float,
    ) -> None:
        super().__init__()
        self.params = params
        self.exp_avg = params.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = params.clone(prefix="exp_avg_sq", init="zeros")
        for p in list(self.exp_avg) + list(self.exp_avg_sq):
            p.requires_grad = False
        self.step = Parameter(
            Tensor(np.zeros((1,), np.float32)), name="adamw_step", requires_grad=False
        )
        self.beta1 = Tensor(np.float32(betas[0]))
        self.beta2 = Tensor(np.float32(betas[1]))
        self.eps = Tensor(np.float32(eps))
        self.weight_decays = tuple(float(weight_decay) if d else 0.0 for d in decay)
        self.fused = ops.operations.AdamWeightDecay()
        self.hyper_map = ops.HyperMap()

    @classmethod
    def from_config(cls, params: ParameterTuple, cfg: OptimizerConfig) -> "AdamW":
        decay = [uses_weight_decay(p.shape) for p in params]
        return cls(params, decay, (cfg.betas[0], cfg.betas[1]), cfg.eps, cfg.weight_decay)

    def construct(self, grads: Tuple[Tensor, ...], lr: Tensor) -> Tensor:
        t = self.step + 1.0
        t = ops.depend(t, ops.assign(self.step, t))
        bias1 = 1.0 - ops.pow(self.beta1, t[0])
        root_bias2 = ops.sqrt(1.0 - ops.pow(self.beta2, t[0]))
        lr_fused = lr * root_bias2 / bias1
        eps_fused = self.eps * root_bias2
        decay_ratio = bias1 / root_bias2
        done = self.hyper_map(
            ops.partial(
                _adamw, self.fused, lr_fused, self.beta1, self.beta2, eps_fused, decay_ratio
            ),
            self.weight_decays,
            self.params,
            self.exp_avg,
            self.exp_avg_sq,
            grads,
        )
        return ops.depend(t, done)


class ApplyGradients(nn.Cell):
    """Clip by ``coefficient``, run the optimizer, zero the accumulators."""

    def __init__(self, optimizer: AdamW, accum: ParameterTuple) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.accum = accum
        self.hyper_map = ops.HyperMap()

    def construct(self, lr: Tensor, coefficient: Tensor) -> Tensor:
        grads = self.hyper_map(ops.partial(_scale_grad, coefficient), self.accum)
        t = self.optimizer(grads, lr)
        done = self.hyper_map(_zero, self.accum)
        return ops.depend(t, done)


class ZeroGradients(nn.Cell):
    def __init__(self, accum: ParameterTuple) -> None:
        super().__init__()
        self.accum = accum
        self.hyper_map = ops.HyperMap()

    def construct(self) -> Tensor:
        done = self.hyper_map(_zero, self.accum)
        return ops.depend(ops.zeros((), ms.float32), done)


# ---------------------------------------------------------------------------------------------
# Everything of one step, for the trainer and the tests
# ---------------------------------------------------------------------------------------------
@dataclass
class MicroBatch:
    """Inputs of :class:`~svdeploy.train.loss.EDMLoss` as float32 arrays."""

    x0: np.ndarray  # (B·F, C, h, w)
    image_latent: np.ndarray  # (B, C, h, w)
    context: np.ndarray  # (B, 1, D)
    time_ids: np.ndarray  # (B, 3)
    sigma: np.ndarray  # (B,)
    noise: np.ndarray  # (B·F, C, h, w)
    keep: np.ndarray  # (B,)

    def tensors(self) -> Tuple[Tensor, ...]:
        return tuple(
            Tensor(np.ascontiguousarray(a, dtype=np.float32))
            for a in (
                self.x0,
                self.image_latent,
                self.context,
                self.time_ids,
                self.sigma,
                self.noise,
                self.keep,
            )
        )


@dataclass
class StepResult:
    loss: float  # mean micro-batch loss (over workers too)
    grad_norm: float  # global norm of the mean gradient, before clipping
    finite: bool
    applied: bool  # whether the optimizer ran
    lr: float
    loss_scale: float  # the scale the step used


class StepRunner:
    """Accumulate micro-batches, then finish and apply one optimizer step."""

    def __init__(
        self,
        loss_net: nn.Cell,
        params: ParameterTuple,
        optimizer_cfg: OptimizerConfig,
        clip_norm: Optional[float],
        drop_overflow_update: bool,
        reducer_factory: Optional[Callable[[ParameterTuple], nn.Cell]] = None,
        world_size: int = 1,
    ) -> None:
        self.params = params
        self.accum = params.clone(prefix="accum", init="zeros")
        for p in self.accum:
            p.requires_grad = False
        self.optimizer = AdamW.from_config(params, optimizer_cfg)
        self.accumulate = AccumulateGradients(loss_net, params, self.accum)
        self.accumulate.set_train(True)
        # data parallel: the reducer averages the accumulated gradients over the workers
        reducer = reducer_factory(self.accum) if reducer_factory is not None else None
        self.finish = FinishGradients(self.accum, reducer, world_size)
        self.apply = ApplyGradients(self.optimizer, self.accum)
        self.zero = ZeroGradients(self.accum)
        self.clip_norm = clip_norm
        self.drop_overflow_update = drop_overflow_update
        self._losses: List[float] = []

    def micro_step(self, batch: MicroBatch, scale: float) -> float:
        loss = float(self.accumulate(*batch.tensors(), Tensor(np.float32(scale))).asnumpy())
        self._losses.append(loss)
        return loss

    def step(self, lr: float, scale: float) -> StepResult:
        if not self._losses:
            raise RuntimeError("step() before any micro_step()")
        count = len(self._losses)
        norm_t, loss_t = self.finish(
            Tensor(np.float32(scale * count)), Tensor(np.float32(sum(self._losses) / count))
        )
        norm = float(norm_t.asnumpy())
        loss = float(loss_t.asnumpy())
        self._losses = []
        finite = math.isfinite(norm)
        applied = finite or not self.drop_overflow_update
        if applied:
            coefficient = clip_coefficient(norm, self.clip_norm)
            self.apply(Tensor(np.float32(lr)), Tensor(np.float32(coefficient)))
        else:
            self.zero()
        return StepResult(
            loss=loss, grad_norm=norm, finite=finite, applied=applied, lr=lr, loss_scale=scale
        )
