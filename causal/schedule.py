"""Few-step schedules: the flow-matching sigma table and the step lists of each checkpoint family
(docs/algorithm.md §4.1-§4.3, §4.7).

Each denoising step carries two numbers: the timestep tau fed to the network and the noise level sigma
used to turn its flow prediction into x0 and to re-noise. They are separate because the unwarped
lists (CausVid, CausVid-Plus) feed tau = 757 while sigma is the table's nearest entry, 0.7567567.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .unipc import unipc_schedule

TABLE_SIZE = 1000
SOLVERS = ("renoise", "unipc")


def sigma_table(shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (sigma_i, T_i), i = 0..999: u_i = linspace(1, 0, 1001)[i], sigma_i = s·u_i / (1 + (s-1)·u_i),
    T_i = 1000·sigma_i (FlowMatchScheduler(shift=s, sigma_min=0, extra_one_step=True), 1000 steps)."""
    u = torch.linspace(1.0, 0.0, TABLE_SIZE + 1, dtype=torch.float32)[:-1]
    sigmas = shift * u / (1 + (shift - 1) * u)
    return sigmas, sigmas * TABLE_SIZE


def nearest_sigma(timestep: float, shift: float) -> float:
    """sigma_{i*} with i* = argmin_i |T_i - tau| (compared in float64)."""
    sigmas, timesteps = sigma_table(shift)
    index = int(torch.argmin((timesteps.double() - timestep).abs()))
    return float(sigmas[index])


def warp_timestep(step: int, shift: float) -> float:
    """tau_warp(m) = T_{1000-m}, with T_1000 = 0."""
    _, timesteps = sigma_table(shift)
    table = torch.cat([timesteps, torch.zeros(1, dtype=torch.float32)])
    return float(table[TABLE_SIZE - step])


@dataclass(frozen=True)
class Schedule:
    """What the sampler does for every block: the (tau, sigma) steps and how it finishes a block."""

    name: str
    step_list: tuple[float, ...]
    shift: float
    warp: bool
    timesteps: tuple[float, ...] = field(init=False)
    sigmas: tuple[float, ...] = field(init=False)
    clean_pass: bool = True
    """Run the network once more on each finished block at timestep 0 so the cache holds clean K/V
    (CausVid, CausVid-Plus, Self-Forcing). LightX2V skips it (docs/algorithm.md §4.6)."""
    lightx2v_arithmetic: bool = False
    """LightX2V's step (docs/algorithm.md §4.7): x0 in float32 and re-noised without rounding it to bf16
    first, instead of the references' x0 = bf16(x - sigma·v) in float64."""
    frames_per_block: int = 3
    """Latent frames denoised together: 3 for chunk-wise models, 1 for frame-wise ones (Causal-Forcing)."""
    first_block_steps: tuple[float, ...] | None = None
    """A step list for the video's first block only (Causal-Forcing++'s `denoising_step_list_first_chunk`), warped
    like the main list; None: every block uses the main list."""
    zero_step: bool = False
    """A final 0 in the list is a real step (Krea Realtime): the step before it re-noises to the table's last
    sigma (the entry nearest T = 0: 0.00498 at shift 5) and the network runs once more at timestep 0. Without
    it a final 0 only ends the list, as in the other families' configs."""
    joint_window: bool = False
    """Rolling Forcing: one block per step denoised together in one forward, each at its own step, the window
    sliding by a block (`causal.rolling_window`), instead of each block's steps in turn."""
    latent_channels: int = 16
    """The latent channels of the family's models: 16 (Wan2.1 VAE) or 48 (Wan2.2 VAE: LongLive 2.0's TI2V-5B);
    `generate` refuses a model of the other kind."""
    solver: str = "renoise"
    """How a step goes from x to the next x: the distilled families' x0 and fresh noise ("renoise"), or Wan's
    UniPC multistep solver ("unipc", LongLive 2.0: `causal.unipc`), whose n-step list at the shift is fixed
    (`unipc.unipc_schedule`): the step list must be that list, e.g. 999, 937, 833, 624 for 4 steps at shift 5."""

    def __post_init__(self) -> None:
        steps = [float(s) for s in self.step_list]
        if steps and steps[-1] == 0 and not self.zero_step:
            steps = steps[:-1]  # the configs end their lists with the final 0
        if not steps or steps == [0.0]:
            raise ValueError("the denoising step list is empty: give at least one timestep in (0, 1000]")
        for i, s in enumerate(steps):
            final_zero = self.zero_step and s == 0 and i == len(steps) - 1
            if not (0 < s <= TABLE_SIZE or final_zero):
                raise ValueError(f"denoising step {s:g} is outside (0, 1000]")
        if any(a <= b for a, b in zip(steps, steps[1:])):
            raise ValueError(f"denoising steps must strictly decrease, got {', '.join(f'{s:g}' for s in steps)}")
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver '{self.solver}'; choose one of {', '.join(SOLVERS)}")
        if self.solver == "unipc":
            self._set_unipc(steps)
            return
        if self.warp:
            if any(s != int(s) for s in steps):
                raise ValueError("warped step lists index the 1000-entry table: use whole numbers")
            taus = [warp_timestep(int(s), self.shift) for s in steps]
        else:
            taus = steps
        object.__setattr__(self, "step_list", tuple(steps))
        object.__setattr__(self, "timesteps", tuple(taus))
        object.__setattr__(self, "sigmas", tuple(nearest_sigma(t, self.shift) for t in taus))
        if self.frames_per_block < 1:
            raise ValueError(f"frames_per_block must be at least 1, got {self.frames_per_block}")
        if self.first_block_steps is not None:
            first = Schedule(self.name, self.first_block_steps, self.shift, self.warp)
            object.__setattr__(self, "first_block_steps", first.step_list)

    def _set_unipc(self, steps: list[float]) -> None:
        timesteps, sigmas = unipc_schedule(len(steps), self.shift)
        if tuple(steps) != timesteps or self.warp or self.first_block_steps is not None or self.zero_step:
            raise ValueError(f"a UniPC schedule's {len(steps)}-step list at shift {self.shift:g} is "
                             f"{', '.join(f'{t:g}' for t in timesteps)} (only the number of steps can change; no "
                             f"warp, first-block list or zero step), got {', '.join(f'{s:g}' for s in steps)}")
        object.__setattr__(self, "step_list", timesteps)
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "sigmas", sigmas[:-1])
        if self.frames_per_block < 1:
            raise ValueError(f"frames_per_block must be at least 1, got {self.frames_per_block}")

    def steps_for(self, first_block: bool) -> list[tuple[float, float]]:
        """The (model timestep, sigma) pairs of a block: the first block's own list where there is one."""
        if first_block and self.first_block_steps is not None:
            first = Schedule(self.name, self.first_block_steps, self.shift, self.warp)
            return list(zip(first.timesteps, first.sigmas))
        return list(zip(self.timesteps, self.sigmas))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def forwards_per_block(self) -> int:
        return self.num_steps + int(self.clean_pass)

    def with_steps(self, step_list: Sequence[float]) -> "Schedule":
        """The same family settings with another step list."""
        return Schedule(name=f"{self.name} (custom steps)", step_list=tuple(step_list), shift=self.shift,
                        warp=self.warp, clean_pass=self.clean_pass, lightx2v_arithmetic=self.lightx2v_arithmetic,
                        frames_per_block=self.frames_per_block, first_block_steps=self.first_block_steps,
                        zero_step=self.zero_step, joint_window=self.joint_window, solver=self.solver,
                        latent_channels=self.latent_channels)


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Schedule("CausVid 1.3B", (1000, 757, 522), shift=8.0, warp=False),
    Schedule("CausVid 1.3B warped 4-step", (1000, 750, 500, 250), shift=8.0, warp=True),
    Schedule("CausVid-Plus 14B", (1000, 934, 862, 756, 603, 410, 250, 140, 74), shift=8.0, warp=False),
    Schedule("LightX2V CausVid 14B", (999, 934, 862, 756, 603, 410, 250, 140, 74), shift=8.0, warp=True,
             clean_pass=False, lightx2v_arithmetic=True),
    Schedule("Self-Forcing / LongLive 1.3B", (1000, 750, 500, 250), shift=5.0, warp=True),
    Schedule("LongLive 1.3B", (1000, 750, 500, 250), shift=5.0, warp=True),
    Schedule("Reward Forcing 1.3B", (1000, 750, 500, 250), shift=5.0, warp=True),
    Schedule("Rolling Forcing 1.3B", (1000, 800, 600, 400, 200), shift=5.0, warp=True, joint_window=True),
    Schedule("Infinity-RoPE (Self-Forcing 1.3B)", (1000, 750, 500, 250), shift=5.0, warp=True),
    Schedule("Causal-Forcing chunk-wise 1.3B", (1000, 750, 500, 250), shift=5.0, warp=True),
    Schedule("Causal-Forcing frame-wise 1.3B", (1000, 750, 500, 250), shift=5.0, warp=True, frames_per_block=1),
    Schedule("Causal-Forcing++ frame-wise 2-step", (1000, 500), shift=5.0, warp=True, frames_per_block=1,
             first_block_steps=(1000, 750, 500, 250)),
    Schedule("Causal-Forcing++ frame-wise 1-step", (1000,), shift=5.0, warp=True, frames_per_block=1,
             first_block_steps=(1000, 750, 500, 250)),
    Schedule("Krea Realtime 14B", (1000, 750, 500, 250, 0), shift=5.0, warp=True, clean_pass=False, zero_step=True),
    Schedule("LongLive 2.0 5B", unipc_schedule(4, 5.0)[0], shift=5.0, warp=False, frames_per_block=8,
             latent_channels=48, solver="unipc"),
)}
"""Presets per checkpoint family (docs/algorithm.md §4.3, §10.1). "CausVid-Plus 14B" is the schedule the
14B weights were trained with; "LightX2V CausVid 14B" reproduces LightX2V's runner (warped, no clean pass).
"LongLive 1.3B" and "Reward Forcing 1.3B" have Self-Forcing's steps (Reward Forcing's `configs/reward_forcing.yaml`);
they differ in their cache policies (`cache_policy.FAMILY_POLICIES`). "Rolling Forcing 1.3B" is its
`configs/rolling_forcing_dmd.yaml` with its joint-window sampler (`joint_window`). "Infinity-RoPE (Self-Forcing
1.3B)" is Self-Forcing's schedule under Infinity-RoPE's cache (training-free, on Self-Forcing's weights).
"Krea Realtime 14B" is its server's default, `linspace(1000, 0, 5)` warped: 1000, 937.5, 833.33, 625 and a last
forward at 0 (its `get_denoising_schedule`); no clean pass, because its context is rebuilt before every block.
"LongLive 2.0 5B" is its `configs/inference.yaml`: Wan's UniPC solver, 4 steps at shift 5 (timesteps 999, 937, 833,
624), blocks of 8 latent frames, a clean pass after each."""
