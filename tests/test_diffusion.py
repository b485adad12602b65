"""mmcourse.diffusion against diffusers' DDPMScheduler and DDIMScheduler (the oracles), guidance by
hand, the training loss's condition dropout, the U-Net and the caption encoders, and clear errors."""

from __future__ import annotations

import pytest
import torch

from mmcourse import diffusion as D
from mmcourse import fidelity, pretrained
from mmcourse.models import DiffusionModel
from mmcourse.models.caption_encoders import BagOfWordsCaptionEncoder, FrozenTextEncoder
from mmcourse.models.unet import ConditionalUNet

T = 1000


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _schedulers():
    """diffusers' schedulers, the oracle; only the tests that compare with it skip without it."""
    return pytest.importorskip("diffusers.schedulers")


def _ddpm(**kw):
    schedulers = _schedulers()
    # diffusers' defaults, spelled out where they matter: clip_sample=True, variance_type="fixed_small"
    return schedulers.DDPMScheduler(num_train_timesteps=T, variance_type="fixed_small", **kw)


def _ddim(**kw):
    schedulers = _schedulers()
    # set_alpha_to_one=True: the last step lands on abar = 1, our t_prev = -1; steps_offset=0
    return schedulers.DDIMScheduler(num_train_timesteps=T, set_alpha_to_one=True, steps_offset=0, **kw)


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: D.linear_schedule(), dict(beta_schedule="linear")),
        (lambda: D.linear_schedule(T, 2e-4, 0.03), dict(beta_schedule="linear", beta_start=2e-4, beta_end=0.03)),
        (lambda: D.cosine_schedule(), dict(beta_schedule="squaredcos_cap_v2")),
    ],
    ids=["linear", "linear-custom", "cosine"],
)
def test_schedules_equal_diffusers(ours, theirs):
    s, ref = ours(), _ddpm(**theirs)
    assert s.num_steps == T and s.betas.dtype == torch.float32
    torch.testing.assert_close(s.betas, ref.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(s.alphas, ref.alphas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(s.alphas_cumprod, ref.alphas_cumprod, rtol=1e-6, atol=1e-9)


def test_schedules_run_from_almost_clean_to_almost_pure_noise():
    for s in (D.linear_schedule(), D.cosine_schedule()):
        abar = s.alphas_cumprod
        assert abar[0] > 0.999 and abar[-1] < 1e-4, s.name
        assert torch.all(abar[1:] < abar[:-1]), f"{s.name}: abar must decrease"
    # the cosine schedule keeps more signal in the middle of the chain
    assert D.cosine_schedule().alphas_cumprod[T // 2] > 2 * D.linear_schedule().alphas_cumprod[T // 2]


def test_make_schedule_by_name():
    torch.testing.assert_close(D.make_schedule("cosine", 50).betas, D.cosine_schedule(50).betas)
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'.*'linear'"):
        D.make_schedule("quadratic")


# ----------------------------------------------------------------------- forward process


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_equals_add_noise(schedule):
    ref = _ddpm(beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[schedule])
    x0, noise = _randn(6, 3, 8, 8, seed=0).clamp(-1, 1), _randn(6, 3, 8, 8, seed=1)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    ours = D.q_sample(x0, t, noise, D.make_schedule(schedule))
    torch.testing.assert_close(ours, ref.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)


def test_q_sample_by_hand_at_one_step():
    s = D.linear_schedule()
    x0, noise = torch.full((1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), -1.0)
    abar = s.alphas_cumprod[400].item()
    expected = abar**0.5 * 0.5 - (1 - abar) ** 0.5
    torch.testing.assert_close(D.q_sample(x0, torch.tensor([400]), noise, s), torch.full_like(x0, expected))


def test_images_round_trip_through_model_space():
    images = torch.rand(2, 3, 4, 4)
    assert D.to_model_space(images).min() >= -1 and D.to_model_space(images).max() <= 1
    torch.testing.assert_close(D.to_images(D.to_model_space(images)), images)


# ------------------------------------------------------------------------------ DDPM steps


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("t", [999, 700, 300, 20, 1, 0])
def test_ddpm_step_equals_diffusers_over_the_full_chain(t, clip):
    ref = _ddpm(clip_sample=clip)
    x_t, eps = _randn(2, 3, 8, 8, seed=t), _randn(2, 3, 8, 8, seed=t + 1)
    expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    noise = _randn(2, 3, 8, 8, seed=7)  # the same draw diffusers makes from its generator
    schedule = D.linear_schedule()
    if clip:
        ours = D.ddpm_step(x_t, eps, t, t - 1, schedule, noise)
    else:  # the posterior step with the unclipped estimate of x0
        ours = D.posterior_step(x_t, D.predict_x0(x_t, eps, schedule.alpha_bar(t)), t, t - 1, schedule, noise)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_ddpm_steps_that_skip_equal_diffusers_with_trailing_spacing():
    ref = _ddpm(clip_sample=True, timestep_spacing="trailing")
    ref.set_timesteps(50)
    ours_ts = D.sampling_timesteps(50, T)
    assert ref.timesteps.tolist() == ours_ts
    schedule = D.linear_schedule()
    for i in (0, 1, 25, 48, 49):
        t, t_prev = ours_ts[i], (ours_ts[i + 1] if i + 1 < 50 else -1)
        x_t, eps = _randn(2, 3, 8, 8, seed=i), _randn(2, 3, 8, 8, seed=100 + i)
        expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(i)).prev_sample
        ours = D.ddpm_step(x_t, eps, t, t_prev, schedule, _randn(2, 3, 8, 8, seed=i))
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5, msg=f"step {t} -> {t_prev}")


def test_ddpm_step_to_the_clean_image_adds_no_noise():
    x_t, eps = _randn(1, 3, 4, 4, seed=0), _randn(1, 3, 4, 4, seed=1)
    s = D.linear_schedule()
    a = D.ddpm_step(x_t, eps, 0, -1, s, torch.zeros_like(x_t))
    b = D.ddpm_step(x_t, eps, 0, -1, s, 100 * torch.ones_like(x_t))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("steps", [1, 7, 10, 50, 333, 1000])
def test_sampling_timesteps_equal_diffusers_trailing(steps):
    ref = _ddim(timestep_spacing="trailing")
    ref.set_timesteps(steps)
    ours = D.sampling_timesteps(steps, T)
    assert ours == ref.timesteps.tolist()
    assert ours[0] == T - 1 and len(set(ours)) == steps


# ------------------------------------------------------------------------------ DDIM steps


@pytest.mark.parametrize("steps", [10, 50, 1000])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_equals_diffusers(steps, clip):
    ref = _ddim(clip_sample=clip, timestep_spacing="trailing")
    ref.set_timesteps(steps)
    ts = D.sampling_timesteps(steps, T)
    schedule = D.linear_schedule()
    for i in sorted({0, 1, steps // 2, steps - 2, steps - 1}):
        t, t_prev = ts[i], (ts[i + 1] if i + 1 < steps else -1)
        x_t, eps = _randn(2, 3, 8, 8, seed=i), _randn(2, 3, 8, 8, seed=50 + i)
        expected = ref.step(eps, t, x_t, eta=0.0).prev_sample
        ours = (D.ddim_step_clipped_x0_only if clip else D.ddim_step)(x_t, eps, t, t_prev, schedule)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5, msg=f"step {t} -> {t_prev}")


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_with_eps_from_the_clipped_x0_equals_diffusers(eta):
    """ddim_step_clipped is diffusers' use_clipped_model_output=True; it changes clipped steps only."""
    ref = _ddim(clip_sample=True, timestep_spacing="trailing")
    ref.set_timesteps(20)
    ts = D.sampling_timesteps(20, T)
    schedule = D.linear_schedule()
    for i in (0, 7, 19):
        t, t_prev = ts[i], (ts[i + 1] if i + 1 < 20 else -1)
        x_t, eps, z = _randn(2, 3, 8, 8, seed=i), _randn(2, 3, 8, 8, seed=50 + i), _randn(2, 3, 8, 8, seed=90 + i)
        expected = ref.step(eps, t, x_t, eta=eta, use_clipped_model_output=True, variance_noise=z).prev_sample
        ours = D.ddim_step_clipped(x_t, eps, t, t_prev, schedule, z, eta=eta)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5, msg=f"step {t} -> {t_prev}")
        plain = D.ddim_step_clipped_x0_only(x_t, eps, t, t_prev, schedule, z, eta=eta)
        if t_prev >= 0:  # at the last step the direction term has weight 0
            assert not torch.allclose(ours, plain), "random x_t has pixels outside [-1, 1]: the clip must matter"
    # a late step (abar near 1) from an x_t whose x0_hat needs no clipping: all three steps agree
    inside, small_eps, (t, t_prev) = x_t.clamp(-0.5, 0.5), 0.01 * eps, ts[17:19]
    assert D.predict_x0(inside, small_eps, schedule.alpha_bar(t)).abs().max() < 1
    plain = D.ddim_step(inside, small_eps, t, t_prev, schedule)
    torch.testing.assert_close(D.ddim_step_clipped(inside, small_eps, t, t_prev, schedule), plain)
    torch.testing.assert_close(D.ddim_step_clipped_x0_only(inside, small_eps, t, t_prev, schedule), plain)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_step_with_eta_equals_diffusers(eta):
    ref = _ddim(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    ref.set_timesteps(20)
    ts = D.sampling_timesteps(20, T)
    x_t, eps, z = _randn(2, 3, 8, 8, seed=0), _randn(2, 3, 8, 8, seed=1), _randn(2, 3, 8, 8, seed=2)
    expected = ref.step(eps, ts[3], x_t, eta=eta, variance_noise=z).prev_sample
    ours = D.ddim_step_clipped_x0_only(x_t, eps, ts[3], ts[4], D.cosine_schedule(), z, eta=eta)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_ddim_with_the_true_noise_recovers_x0():
    """A DDIM step to t_prev = -1 with the exact noise of q_sample returns x_0 exactly: the step
    only inverts the forward process, so any error comes from the network, not the sampler."""
    s = D.cosine_schedule()
    x0, noise = _randn(2, 3, 8, 8, seed=0).clamp(-1, 1), _randn(2, 3, 8, 8, seed=1)
    x_t = D.q_sample(x0, torch.tensor([600, 600]), noise, s)
    torch.testing.assert_close(D.ddim_step(x_t, noise, 600, -1, s), x0, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------------- guidance


def test_guidance_with_w_zero_is_exactly_the_conditional_prediction():
    eps_c, eps_u = _randn(3, 3, 4, 4, seed=0), _randn(3, 3, 4, 4, seed=1)
    assert torch.equal(D.guided_eps(eps_c, eps_u, 0), eps_c)
    assert torch.equal(D.guided_eps(eps_c, eps_u, 0.0), eps_c)


@pytest.mark.parametrize("w", [-1.0, 0.5, 1.5, 3.5, 6.5])
def test_guidance_formula_and_diffusers_convention(w):
    eps_c, eps_u = _randn(3, 3, 4, 4, seed=0), _randn(3, 3, 4, 4, seed=1)
    ours = D.guided_eps(eps_c, eps_u, w)
    torch.testing.assert_close(ours, eps_c + w * (eps_c - eps_u))
    s = w + 1  # diffusers' pipelines: noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
    torch.testing.assert_close(ours, eps_u + s * (eps_c - eps_u))
    assert D.cfg_scale_to_w(s) == pytest.approx(w)
    if w == -1.0:
        torch.testing.assert_close(ours, eps_u)


def test_sd35_guidance_sweep_in_our_convention():
    assert [D.cfg_scale_to_w(s) for s in (1, 2.5, 4.5, 7.5)] == [0.0, 1.5, 3.5, 6.5]


@pytest.mark.parametrize("bad", [None, "7.5", float("nan"), float("inf"), True, torch.tensor(2.0)])
def test_guidance_weight_must_be_a_finite_number(bad):
    eps = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="guidance weight must be a finite number"):
        D.guided_eps(eps, eps, bad)


def test_guidance_needs_matching_predictions():
    with pytest.raises(ValueError, match="same shape"):
        D.guided_eps(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4), 1.0)


# --------------------------------------------------------------------- the model and sampling


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = DiffusionModel(image_size=8, channels=(8, 16), emb_dim=16, schedule="linear")
    with torch.no_grad():  # a random, non-zero null embedding, so eps(x) and eps(x, c) differ
        model.null_cond.normal_()
        for p in model.unet.parameters():  # undo the zero init of the last convs: a network whose output varies
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _diffusers_loop(model, captions, w, steps, seed, scheduler):
    """The sampling loop as a diffusers pipeline writes it, with guidance_scale = 1 + w: both
    predictions in one batch of 2N (conditional first, as ours, so float rounding matches too)."""
    g = torch.Generator().manual_seed(seed)
    cond = model.encode(captions)
    null = model.null_cond.expand_as(cond)
    x = torch.randn(len(captions), 3, model.image_size, model.image_size, generator=g)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            tt = torch.full((len(captions),), int(t))
            eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, null])).chunk(2)
            eps = eps_u + (1 + w) * (eps_c - eps_u)
            extra = {"use_clipped_model_output": True} if isinstance(scheduler, _schedulers().DDIMScheduler) else {}
            x = scheduler.step(eps, t, x, generator=g, **extra).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("sampler, w", [("ddim", 0.0), ("ddim", 2.5), ("ddpm", 0.0), ("ddpm", 1.5)])
def test_sample_equals_a_diffusers_loop(tiny_model, sampler, w):
    captions = ["a red square", "a photo of a blue star"]
    ref = (_ddim if sampler == "ddim" else _ddpm)(clip_sample=True, timestep_spacing="trailing")
    expected = _diffusers_loop(tiny_model, captions, w, 8, 3, ref)
    step = D.ddim_step_clipped if sampler == "ddim" else D.ddpm_step
    ours = D.sample(tiny_model, captions, guidance_scale=w, steps=8, seed=3, step=step)
    assert ours.shape == (2, 3, 8, 8) and ours.min() >= 0 and ours.max() <= 1
    # float32 rounding (the guidance formula is written differently) is amplified by 1/sqrt(abar) ~ 160
    # at t = 999 when x0 is estimated, so a whole chain agrees to 1e-4 rather than a single step's 1e-5
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_sample_is_reproducible_and_guidance_changes_it(tiny_model):
    a = D.sample(tiny_model, ["a red square"], guidance_scale=0, steps=4, seed=1)
    assert torch.equal(a, D.sample(tiny_model, ["a red square"], guidance_scale=0, steps=4, seed=1))
    assert not torch.equal(a, D.sample(tiny_model, ["a red square"], guidance_scale=0, steps=4, seed=2))
    assert not torch.equal(a, D.sample(tiny_model, ["a red square"], guidance_scale=4, steps=4, seed=1))


def test_sample_explains_bad_arguments(tiny_model):
    with pytest.raises(TypeError, match="reverse-step function"):
        D.sample(tiny_model, ["a red square"], guidance_scale=1, step="euler")
    with pytest.raises(ValueError, match="positive int"):
        D.sample(tiny_model, ["a red square"], guidance_scale=1, steps=0)
    with pytest.raises(ValueError, match="cannot sample in 2000 steps"):
        D.sample(tiny_model, ["a red square"], guidance_scale=1, steps=2000)
    with pytest.raises(ValueError, match="guidance weight"):
        D.sample(tiny_model, ["a red square"], guidance_scale=None)
    with pytest.raises(TypeError, match="non-empty list of str"):
        D.sample(tiny_model, [], guidance_scale=1)
    with pytest.raises(TypeError, match="seed must be an int"):
        D.sample(tiny_model, ["a red square"], guidance_scale=1, seed=1.5)


# --------------------------------------------------------------------------- training loss


def test_training_loss_drops_captions_with_probability_p_uncond(tiny_model):
    """p_uncond = 0 uses every caption, p_uncond = 1 none; with the same generator both losses equal
    the MSE computed by hand with the caption or with the null embedding."""
    x0 = _randn(4, 3, 8, 8, seed=0).clamp(-1, 1)
    cond = tiny_model.encode(["a red square", "a blue star", "a green heart", "a pink circle"])
    for p, c in ((0.0, cond), (1.0, tiny_model.null_cond.expand_as(cond))):
        g = torch.Generator().manual_seed(5)
        t = torch.randint(0, T, (4,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        expected = torch.nn.functional.mse_loss(tiny_model(D.q_sample(x0, t, noise, tiny_model.schedule), t, c), noise)
        ours = D.training_loss(tiny_model, x0, cond, p_uncond=p, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(ours, expected)


def test_min_snr_weighting_by_hand(tiny_model):
    """snr_gamma weights each image's squared error by min(SNR, gamma) / SNR; a huge gamma is the plain loss."""
    x0 = _randn(6, 3, 8, 8, seed=1).clamp(-1, 1)
    cond = tiny_model.encode(["a red square"] * 6)
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, T, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    torch.rand(6, generator=g)  # the dropout draw (p_uncond = 0 drops nothing)
    abar = tiny_model.schedule.alphas_cumprod[t]
    snr = abar / (1 - abar)
    err = (tiny_model(D.q_sample(x0, t, noise, tiny_model.schedule), t, cond) - noise).pow(2).mean(dim=(1, 2, 3))
    expected = (torch.minimum(snr, torch.tensor(5.0)) / snr * err).mean()
    ours = D.training_loss(tiny_model, x0, cond, p_uncond=0.0, snr_gamma=5.0, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, expected)
    plain = D.training_loss(tiny_model, x0, cond, p_uncond=0.0, generator=torch.Generator().manual_seed(7))
    huge = D.training_loss(tiny_model, x0, cond, p_uncond=0.0, snr_gamma=1e12, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(huge, plain)
    small_gamma = D.training_loss(tiny_model, x0, cond, p_uncond=0.0, snr_gamma=0.05,
                                  generator=torch.Generator().manual_seed(7))
    assert (snr > 0.05).any() and small_gamma < plain, "the weights are at most 1, below 1 where SNR > gamma"
    with pytest.raises(ValueError, match="snr_gamma must be positive"):
        D.training_loss(tiny_model, x0, cond, snr_gamma=0.0)


def test_the_null_embedding_is_trained_only_by_dropped_captions(tiny_model):
    x0 = _randn(4, 3, 8, 8, seed=0).clamp(-1, 1)
    cond = tiny_model.encode(["a red square"] * 4)
    for p, reaches in ((0.0, False), (1.0, True)):
        tiny_model.zero_grad()
        D.training_loss(tiny_model, x0, cond, p_uncond=p, generator=torch.Generator().manual_seed(0)).backward()
        grad = tiny_model.null_cond.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches, p
    tiny_model.zero_grad()


def test_a_few_steps_of_training_lower_the_loss():
    torch.manual_seed(0)
    model = DiffusionModel(image_size=8, channels=(8, 16), emb_dim=16)
    x0 = torch.zeros(16, 3, 8, 8)
    x0[:8, 0] = 1.0  # half red, half blue: a caption decides which
    x0[8:, 2] = 1.0
    x0 = D.to_model_space(x0.clamp(0, 1) * 0.5 + 0.25)
    cond = model.encode(["a red square"] * 8 + ["a blue square"] * 8)

    def loss():
        return D.training_loss(model, x0, cond, p_uncond=0.1, generator=torch.Generator().manual_seed(0))

    before = loss().item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * before


def test_training_loss_explains_bad_arguments(tiny_model):
    x0 = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="p_uncond is a probability"):
        D.training_loss(tiny_model, x0, tiny_model.encode(["a", "b"]), p_uncond=1.5)
    with pytest.raises(ValueError, match=r"cond must be \(2, "):
        D.training_loss(tiny_model, x0, torch.zeros(2, 5))


# ----------------------------------------------------------------------------- input checks


def test_q_sample_explains_bad_inputs():
    s = D.linear_schedule()
    x0 = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        D.q_sample(x0, torch.tensor([0, 1]), torch.zeros(2, 3, 4, 5), s)
    with pytest.raises(ValueError, match=r"t must lie in 0\.\.999"):
        D.q_sample(x0, torch.tensor([0, 1000]), torch.zeros_like(x0), s)
    with pytest.raises(ValueError, match="integer tensor"):
        D.q_sample(x0, torch.tensor([0.5, 1.0]), torch.zeros_like(x0), s)
    with pytest.raises(ValueError, match="N = 2 images"):
        D.q_sample(x0, torch.tensor([3]), torch.zeros_like(x0), s)


def test_reverse_steps_explain_bad_inputs():
    s = D.linear_schedule()
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="earlier t_prev"):
        D.ddim_step(x, x, 10, 10, s)
    with pytest.raises(ValueError, match="earlier t_prev"):
        D.ddpm_step(x, x, 1000, 999, s, x)
    with pytest.raises(ValueError, match="eps must have the shape of x_t"):
        D.ddim_step(x, torch.zeros(1, 3, 4, 5), 10, 9, s)
    with pytest.raises(ValueError, match="pass noise="):
        D.ddim_step(x, x, 10, 9, s, eta=0.5)
    with pytest.raises(ValueError, match="eta must be a number in"):
        D.ddim_step(x, x, 10, 9, s, eta=2.0)
    with pytest.raises(ValueError, match="positive int"):
        D.linear_schedule(0)


# --------------------------------------------------------------------- U-Net and encoders


def test_unet_shapes_and_errors():
    net = ConditionalUNet(cond_dim=5, channels=(8, 16, 16), emb_dim=16)
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([0, 999]), torch.randn(2, 5)
    assert net(x, t, c).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 3, 10, 10), t, c)
    with pytest.raises(ValueError, match=r"cond of shape \(2, 5\)"):
        net(x, t, torch.randn(2, 6))
    with pytest.raises(ValueError, match="multiples of groups"):
        ConditionalUNet(cond_dim=5, channels=(8, 12))


def test_self_attention_starts_as_the_identity_and_mixes_positions():
    from mmcourse.models.unet import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(16, heads=4)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(attn(x), x)  # zero-initialised output projection
    with torch.no_grad():
        attn.proj.weight.normal_()
    y = attn(x)
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0  # change one position...
    changed = (attn(x2) - y).abs().sum(dim=1)  # ...and every position's output moves
    assert (changed[:, 1:, 1:] > 0).all()
    net = ConditionalUNet(cond_dim=5, channels=(8, 16), emb_dim=16, attention=True)
    assert net(torch.randn(2, 3, 8, 8), torch.tensor([0, 999]), torch.randn(2, 5)).shape == (2, 3, 8, 8)
    assert net.config["attention"] is True
    with pytest.raises(ValueError, match="divisible by heads"):
        SelfAttention(12, heads=8, groups=4)


def test_unet_output_depends_on_time_and_condition():
    torch.manual_seed(0)
    net = ConditionalUNet(cond_dim=4, channels=(8, 16), emb_dim=16)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(1, 3, 8, 8)
    base = net(x, torch.tensor([10]), torch.zeros(1, 4))
    assert not torch.allclose(base, net(x, torch.tensor([900]), torch.zeros(1, 4)))
    assert not torch.allclose(base, net(x, torch.tensor([10]), torch.ones(1, 4)))


def test_bag_of_words_encoder():
    enc = BagOfWordsCaptionEncoder()
    z = enc(["a red square", "a red red square"])
    assert z.shape == (2, enc.dim) and not z.requires_grad
    assert z[1].sum() == z[0].sum() + 1
    assert torch.equal(enc("a red square"), z[:1])


class _FakeText(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 6)

    def encode_text(self, texts):
        return self.proj(torch.tensor([[len(t), t.count("a"), 1.0] for t in texts]))


def test_frozen_text_encoder_wraps_any_encode_text_model():
    enc = FrozenTextEncoder(_FakeText())
    z = enc(["a red square", "a blue star"])
    assert enc.dim == 6 and z.shape == (2, 6) and not z.requires_grad
    torch.testing.assert_close(z.norm(dim=1), torch.full((2,), 6**0.5))  # unit direction, entries of mean square 1
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.text_model.training
    with pytest.raises(TypeError, match="no encode_text"):
        FrozenTextEncoder(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------- recipe and quality


def test_the_training_recipe_is_deterministic_and_returns_the_average():
    from mmcourse.recipes.diffusion_shapes import train_diffusion

    a, metrics = train_diffusion(seed=1, steps=3, batch_size=4, channels=(8, 16), progress=False)
    b, _ = train_diffusion(seed=1, steps=3, batch_size=4, channels=(8, 16), progress=False)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    assert metrics["steps"] == 3 and 0 < metrics["final_loss"] < 10
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    torch.manual_seed(1)
    fresh = DiffusionModel(channels=(8, 16))
    assert not torch.equal(fresh.unet.conv_in.weight, a.unet.conv_in.weight), "the average must have moved"


def test_score_images_reads_real_images_and_measures_spread():
    from mmcourse.data.shapes import make_shapes

    pairs = fidelity.eval_pairs()
    classifier = pretrained.load("attributes_shapes")
    real = torch.stack([make_shapes(4, seed=40 + i, style="flat", size=32, combos=[p]).images for i, p in enumerate(pairs)])
    good = fidelity.score_images(real, pairs, classifier)
    assert good["color"] >= 0.95 and good["both"] >= 0.9 and good["diversity"] > 0.1
    shuffled = fidelity.score_images(real.roll(1, dims=0), pairs, classifier)  # every row shows the previous row's pair
    assert shuffled["color"] == 0 and shuffled["both"] == 0
    same = fidelity.score_images(real[:, :1].expand(-1, 4, -1, -1, -1), pairs, classifier)  # four copies of one image per caption
    assert same["diversity"] == 0
    small = fidelity.score_images(torch.nn.functional.interpolate(real.flatten(0, 1), size=16, mode="area").view(8, 4, 3, 16, 16),
                                  pairs, classifier)
    assert small["color"] >= 0.9, "16 x 16 images are upsampled for the 32 x 32 classifier"
    with pytest.raises(ValueError, match="K >= 2"):
        fidelity.score_images(real[:, :1], pairs, classifier)
    ref = fidelity.real_reference(classifier, per_caption=4, seed=3, style="flat", size=16)
    assert ref["both"] >= 0.8 and ref["diversity"] > 0.1


def test_a_model_on_a_frozen_text_model_stores_only_the_denoiser():
    clip = pretrained.load("clip_shapes")
    model = DiffusionModel(clip, image_size=8, channels=(8, 16), emb_dim=16)
    assert isinstance(model.encoder, FrozenTextEncoder) and model.encoder.text_model is clip
    assert "text_model" not in model.config, "the text model comes from its own checkpoint, not from the config"
    assert not any(k.startswith("encoder") for k in model.state_dict()), "the frozen text encoder is not saved with the denoiser"
    assert model.null_cond.shape == (clip.embed_dim,)


def test_fit_calls_after_step_once_per_step():
    from mmcourse.training import fit

    model = torch.nn.Linear(2, 1)
    seen = []
    batches = iter([torch.ones(3, 2)] * 5)
    fit(model, lambda m, b: m(b).pow(2).mean(), batches, steps=5, progress=False, after_step=seen.append)
    assert seen == [0, 1, 2, 3, 4]


def test_evaluate_guidance_reports_fidelity_and_diversity(tiny_model):
    classifier = pretrained.load("attributes_shapes")
    out = fidelity.evaluate_guidance(tiny_model, classifier, (0.0, 2.0), per_caption=2, steps=2)
    assert list(out) == [0.0, 2.0]
    for scores in out.values():
        assert set(scores) == {"color", "shape", "both", "diversity"}
        assert 0 <= scores["both"] <= min(scores["color"], scores["shape"]) <= 1 and scores["diversity"] > 0
    with pytest.raises(ValueError, match="per_caption >= 2"):
        fidelity.evaluate_guidance(tiny_model, classifier, (0.0,), per_caption=1)
