"""The flow-matching table and step lists reproduce the values tabulated in docs/algorithm.md §4.1-§4.3."""

from __future__ import annotations

import pytest
import torch

from causal.schedule import SCHEDULES, Schedule, nearest_sigma, sigma_table, warp_timestep


def test_sigma_table_float32_ends():
    for shift, last in [(8.0, 0.00794439), (5.0, 0.00498008)]:
        sigmas, timesteps = sigma_table(shift)
        assert sigmas.dtype == torch.float32 and sigmas.shape == (1000,)
        assert timesteps[0].item() == 1000.0
        assert sigmas[-1].item() == pytest.approx(last, abs=1e-8)


def test_nearest_grid_lookup_keeps_tau_and_sigma_apart():
    assert nearest_sigma(757, 8.0) == pytest.approx(0.7567567, abs=1e-7)
    s = SCHEDULES["CausVid 1.3B"]
    assert s.timesteps == (1000.0, 757.0, 522.0)
    assert s.sigmas == pytest.approx((1.0, 0.7567567, 0.5217391), abs=1e-7)
    assert s.clean_pass and not s.lightx2v_arithmetic


def test_causvid_plus_14b_unwarped():
    s = SCHEDULES["CausVid-Plus 14B"]
    assert s.timesteps == (1000.0, 934.0, 862.0, 756.0, 603.0, 410.0, 250.0, 140.0, 74.0)
    assert s.sigmas == pytest.approx((1.0, 0.9340398, 0.8617806, 0.7558416, 0.6037736, 0.4102564, 0.25,
                                      0.1403509, 0.0747664), abs=1e-7)


def test_self_forcing_warp():
    s = SCHEDULES["Self-Forcing / LongLive 1.3B"]
    assert s.timesteps == pytest.approx((1000.0, 937.5, 833.3333, 625.0), abs=1e-4)
    assert s.sigmas == pytest.approx((1.0, 0.9375, 0.8333333, 0.625), abs=1e-7)
    # after warping tau = 1000·sigma exactly in float32
    assert all(torch.tensor(t, dtype=torch.float32) == torch.tensor(sg, dtype=torch.float32) * 1000
               for t, sg in zip(s.timesteps, s.sigmas))


def test_causvid_warped_four_step():
    s = SCHEDULES["CausVid 1.3B warped 4-step"]
    assert s.timesteps == pytest.approx((1000.0, 960.0, 888.8889, 727.2728), abs=1e-4)


def test_lightx2v_compatibility_mode():
    s = SCHEDULES["LightX2V CausVid 14B"]
    assert s.timesteps == pytest.approx((999.8749, 991.2444, 980.3810, 961.2206, 923.9610, 847.5453, 727.2728,
                                         565.6566, 389.9868), abs=1e-4)
    assert s.sigmas[-1] == pytest.approx(0.3899868, abs=1e-7)
    assert not s.clean_pass and s.lightx2v_arithmetic
    assert s.forwards_per_block == 9 and SCHEDULES["CausVid-Plus 14B"].forwards_per_block == 10


def test_warp_end_points():
    assert warp_timestep(1000, 8.0) == 1000.0
    assert warp_timestep(0, 8.0) == 0.0


def test_trailing_zero_is_dropped_and_custom_steps_keep_family_settings():
    s = Schedule("x", (1000, 757, 522, 0), shift=8.0, warp=False)
    assert s.timesteps == (1000.0, 757.0, 522.0)
    custom = SCHEDULES["LightX2V CausVid 14B"].with_steps([999, 500])
    assert custom.num_steps == 2 and not custom.clean_pass and custom.warp


@pytest.mark.parametrize("steps, match", [
    ((), "empty"), ((0,), "empty"), ((1000, 1000), "decrease"), ((500, 757), "decrease"),
    ((1200, 500), "outside"), ((-5,), "outside"),
])
def test_bad_step_lists(steps, match):
    with pytest.raises(ValueError, match=match):
        Schedule("bad", steps, shift=8.0, warp=False)


def test_warped_steps_must_be_whole():
    with pytest.raises(ValueError, match="whole"):
        Schedule("bad", (999.5,), shift=8.0, warp=True)
