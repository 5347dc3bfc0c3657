"""Wan's flow-matching UniPC solver (order 2, B(h) = e^h - 1, x0 form), as LongLive 2.0 denoises each block
(docs/algorithm.md section 4.9).

A step list of n steps at shift s: u_k = 0.999 (1 - k / n), k = 0..n-1, sigma_k = s u_k / (1 + (s - 1) u_k) in
float64, the network fed T_k = trunc(1000 sigma_k), and sigma_n = 0. With alpha = 1 - sigma and
lambda = log(alpha) - log(sigma) (float32), step k turns the flow v_k = Net(x_k, T_k) into

    m_k = x_k - sigma_k v_k                                            (the x0 prediction)

corrects x_k with it (UniC, k > 0), then predicts x_{k+1} (UniP), both with h = lambda_{k+1} - lambda_k and
-h's phi functions:

    x_{k+1} = (sigma_{k+1} / sigma_k) x_k - alpha_{k+1} (e^-h - 1) m_k - alpha_{k+1} (e^-h - 1) rho D_k,
    D_k = (m_{k-1} - m_k) / r_k,  r_k = (lambda_{k-1} - lambda_k) / h,  rho = 1/2    (order 2; 0 at order 1)

The corrector is the same update from x_{k-1} with m_k's difference added (its weights from a 2x2 solve at
order 2). The order is 1 at the first and the last step. At the last step sigma_n = 0, so x_n = m_{n-1}.

Every product and sum is a separate op in the latents' dtype with float32 scalars, as the reference's scheduler
computes it, so a block comes out bit for bit the same.
"""

from __future__ import annotations

import torch

TRAIN_STEPS = 1000
SOLVER_ORDER = 2
SIGMA_MAX = float(torch.tensor(1 - 1 / TRAIN_STEPS, dtype=torch.float32))
"""The training table's largest sigma, 0.999 rounded to float32, where a step list starts."""


def unipc_schedule(num_steps: int, shift: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(timesteps T_0..T_{n-1}, sigmas sigma_0..sigma_n) of an n-step list at `shift` (sigma_n = 0)."""
    if num_steps < 1:
        raise ValueError(f"UniPC needs at least one step, got {num_steps}")
    step = (0.0 - SIGMA_MAX) / num_steps  # linspace(0.999, 0, n + 1) without its end, as numpy computes it
    u = torch.arange(num_steps, dtype=torch.float64) * step + SIGMA_MAX
    sigmas = shift * u / (1 + (shift - 1) * u)
    timesteps = (sigmas * TRAIN_STEPS).to(torch.int64)
    table = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(torch.float32)
    return tuple(float(t) for t in timesteps), tuple(float(s) for s in table)


class UniPC:
    """One block's solver state: the sigmas of its steps and the last two x0 predictions."""

    def __init__(self, sigmas: tuple[float, ...]) -> None:
        self.sigmas = torch.tensor(sigmas, dtype=torch.float32)  # on the CPU: 0-dim scalars in every product
        self.steps = len(sigmas) - 1
        self.index = 0
        self.predictions: list[torch.Tensor] = []
        self.last_sample: torch.Tensor | None = None
        self.last_order = 0

    def _lambda(self, i: int) -> torch.Tensor:
        sigma = self.sigmas[i]
        return torch.log(1 - sigma) - torch.log(sigma)

    def step(self, v: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the sample after this step, this step's x0 prediction m) from the network's flow v at sample x."""
        i = self.index
        m = x - self.sigmas[i] * v
        if i > 0 and self.last_sample is not None:
            x = self._update(self.last_sample, m, i - 1, self.last_order, correct=True)
        self.predictions = [*self.predictions[-(SOLVER_ORDER - 1):], m]
        order = min(SOLVER_ORDER, self.steps - i, i + 1)
        self.last_sample, self.last_order = x, order
        self.index += 1
        return self._update(x, m, i, order, correct=False), m

    def _update(self, x: torch.Tensor, m_new: torch.Tensor, s: int, order: int, *, correct: bool) -> torch.Tensor:
        """UniP (predict sigma_{s+1} from x at sigma_s) or UniC (correct the prediction at sigma_{s+1} with the
        x0 m_new made there). m0 is the x0 made at sigma_s, r_1 its distance to the one before in lambda."""
        device, dtype = x.device, x.dtype
        m0 = self.predictions[-1]  # UniC runs before this step's x0 joins the list
        sigma_t, sigma_s = self.sigmas[s + 1], self.sigmas[s]
        alpha_t = 1 - sigma_t
        lambda_s = self._lambda(s)
        h = self._lambda(s + 1) - lambda_s
        ratios, differences = [], []
        for j in range(1, order):
            r = (self._lambda(s - j) - lambda_s) / h
            ratios.append(r)
            differences.append((self.predictions[-(j + 1)] - m0) / r)
        rks = torch.tensor([*ratios, 1.0], device=device)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = torch.expm1(hh)
        rows, b, factorial = [], [], 1
        for j in range(1, order + 1):
            rows.append(torch.pow(rks, j - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= j + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        d1s = torch.stack(differences, dim=1) if differences else None
        x_t = sigma_t / sigma_s * x - alpha_t * h_phi_1 * m0
        if correct:
            rhos = (torch.tensor([0.5], dtype=dtype, device=device) if order == 1 else
                    torch.linalg.solve(torch.stack(rows), torch.tensor(b, device=device)).to(device).to(dtype))
            res = torch.einsum("k,bkc...->bc...", rhos[:-1], d1s) if d1s is not None else 0
            return (x_t - alpha_t * b_h * (res + rhos[-1] * (m_new - m0))).to(dtype)
        res = torch.einsum("k,bkc...->bc...", torch.tensor([0.5], dtype=dtype, device=device), d1s) \
            if d1s is not None else 0
        return (x_t - alpha_t * b_h * res).to(dtype)
