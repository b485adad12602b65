"""Notebook 09's package: the audio world, mmcourse.audio against librosa, RVQ against vector-quantize-pytorch,
WaveNet's receptive field (by gradients) and fast generation, and the two bundled audio checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmcourse import audio as A
from mmcourse import codec
from mmcourse.data.audio import CAPTION_WORDS, HELDOUT_COMBOS, KINDS, audio_tokenizer, make_audio
from mmcourse.data.tokenizer import default_tokenizer
from mmcourse.models.wavenet import WaveNet, nll_nats

librosa = pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def clips():
    return make_audio(18, seed=3, split="all")


# ------------------------------------------------------------------------------------------- the world


def test_same_arguments_give_identical_clips():
    a, b = make_audio(12, seed=5), make_audio(12, seed=5)
    assert torch.equal(a.waveforms, b.waveforms) and a.captions == b.captions
    assert not torch.equal(a.waveforms, make_audio(12, seed=6).waveforms)
    assert a.waveforms.shape == (12, 4000) and a.waveforms.dtype == torch.float32
    assert a.waveforms.abs().max() <= 1 and a.labels.tolist() == [KINDS.index(k) for k in a.kinds]


def test_splits_hold_out_their_pairs():
    train = make_audio(200, seed=0, split="train")
    held = make_audio(40, seed=0, split="heldout")
    assert not set(zip(train.kinds, train.registers)) & set(HELDOUT_COMBOS)
    assert set(zip(held.kinds, held.registers)) <= set(HELDOUT_COMBOS)
    assert set(train.kinds) == set(KINDS)


def test_every_caption_word_is_in_the_audio_tokenizer_and_course_ids_are_kept():
    tok, course = audio_tokenizer(), default_tokenizer()
    assert tok.itos[: course.vocab_size] == course.itos
    assert not [w for w in CAPTION_WORDS if tok.unknown_words(w)]
    captions = make_audio(300, seed=1, split="all").captions
    assert not [c for c in captions if tok.unknown_words(c)]


def test_bad_world_arguments():
    with pytest.raises(ValueError, match="positive"):
        make_audio(2, seed=0, sample_rate=0)
    with pytest.raises(ValueError, match="split"):
        make_audio(2, seed=0, split="test")
    with pytest.raises(ValueError, match="unknown kinds"):
        make_audio(2, seed=0, kinds=["bird"])


# ---------------------------------------------------------------------------------------- librosa oracles


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [(8000, 256, 32, 0.0, None), (22050, 2048, 128, 30.0, 8000.0),
                                                           (16000, 512, 40, 0.0, 7600.0)])
def test_mel_filterbank_equals_librosa(htk, norm, sr, n_fft, n_mels, fmin, fmax):
    ours = A.mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm, dtype=torch.float64).numpy()
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm, dtype=np.float64)
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    # the default dtype is librosa's float32
    ref32 = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    np.testing.assert_allclose(A.mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm).numpy(),
                               ref32, rtol=1e-6, atol=1e-7 * np.abs(ref32).max())


def test_the_two_mel_conventions_differ():
    """librosa's default (Slaney scale, area-normalised) is not torchaudio's (HTK scale, peaks at 1)."""
    slaney = A.mel_filterbank(16000, 512, 40)
    htk = A.mel_filterbank(16000, 512, 40, htk=True, norm=None)
    assert htk.amax() <= 1 and htk.amax(1).min() > 0.7  # HTK, no norm: peaks up to 1 (lower where a triangle falls between bins)
    assert slaney.amax() < 0.1  # Slaney norm: 2 / width in Hz
    assert not torch.allclose(A.mel_filterbank(16000, 512, 40, htk=True), A.mel_filterbank(16000, 512, 40), atol=1e-4)
    assert abs(A.hz_to_mel(1000.0).item() - 15.0) < 1e-12  # Slaney: linear up to 1 kHz = 15 mels
    assert abs(A.hz_to_mel(1000.0, htk=True).item() - 999.9855) < 1e-3  # HTK: 1000 Hz is about 1000 mels
    for htk_ in (False, True):
        f = torch.tensor([0.0, 440.0, 999.0, 1000.0, 4000.0], dtype=torch.float64)
        assert torch.allclose(A.mel_to_hz(A.hz_to_mel(f, htk=htk_), htk=htk_), f)
        np.testing.assert_allclose(A.hz_to_mel(f, htk=htk_).numpy(), librosa.hz_to_mel(f.numpy(), htk=htk_), rtol=1e-12)


def test_stft_equals_librosa_with_zero_padding(clips):
    x = clips.waveforms[:3].double()
    ours = A.stft(x, 256, 64)
    ref = librosa.stft(x.numpy(), n_fft=256, hop_length=64)
    assert ours.shape == ref.shape
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12 * scale)
    assert ours.shape[-1] == A.frame_count(4000, 256, 64)


def test_stft_traps_reflect_padding_and_the_rectangular_window(clips):
    x = clips.waveforms[0].double()
    x = x + 0.5  # a clip that does not start at zero makes the padding visible
    ref = librosa.stft(x.numpy(), n_fft=256, hop_length=64)
    torch_default = torch.stft(x, 256, 64, window=torch.hann_window(256, dtype=torch.float64), return_complex=True)
    edge = np.abs(torch_default.numpy()[:, 0] - ref[:, 0]).max()
    middle = np.abs(torch_default.numpy()[:, 5:-5] - ref[:, 5:-5]).max()
    assert edge > 1.0 and middle < 1e-9, "torch.stft reflects at the edges, librosa pads zeros; the middle agrees"
    np.testing.assert_allclose(A.stft(x, 256, 64, pad_mode="reflect").numpy(), torch_default.numpy(), atol=1e-10)
    np.testing.assert_allclose(librosa.stft(x.numpy(), n_fft=256, hop_length=64, pad_mode="reflect"), torch_default.numpy(),
                               atol=1e-9)
    rect = torch.stft(x, 256, 64, return_complex=True)  # no window given: every sample weighted 1
    np.testing.assert_allclose(A.stft(x, 256, 64, window=None, pad_mode="reflect").numpy(), rect.numpy(), atol=1e-10)
    tone = torch.sin(2 * math.pi * 1010.3 * torch.arange(4000, dtype=torch.float64) / 8000)  # between two bins
    leak = {w: A.spectrogram(tone, 256, 64, window=w)[:, 30] for w in ("hann", None)}
    far = slice(60, None)  # bins more than ~800 Hz away from the tone
    assert leak[None][far].max() / leak[None].max() > 20 * leak["hann"][far].max() / leak["hann"].max()


def test_mel_spectrogram_and_db_equal_librosa(clips):
    x = clips.waveforms[1].double()
    ours = A.mel_spectrogram(x, 8000, 256, 64, 32)
    ref = librosa.feature.melspectrogram(y=x.numpy(), sr=8000, n_fft=256, hop_length=64, n_mels=32)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())
    np.testing.assert_allclose(A.power_to_db(ours).numpy(), librosa.power_to_db(ref), atol=1e-6)


def test_istft_and_griffin_lim_equal_librosa(clips):
    x = clips.waveforms[2].double()
    spec = librosa.stft(x.numpy(), n_fft=256, hop_length=64)
    np.testing.assert_allclose(A.istft(torch.from_numpy(spec), 256, 64, length=4000).numpy(),
                               librosa.istft(spec, n_fft=256, hop_length=64, length=4000), atol=1e-12)
    mag = np.abs(spec)
    ref = librosa.griffinlim(mag, n_iter=32, hop_length=64, n_fft=256, init=None, length=4000)  # deterministic start
    ours = A.griffin_lim(torch.from_numpy(mag), 256, 64, init=None, length=4000)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-9 * np.abs(ref).max())


def test_griffin_lim_converges_as_librosas_does(clips):
    x = clips.waveforms[3].double()
    mag = A.spectrogram(x, 256, 64)
    history: list[float] = []
    ours = A.griffin_lim(mag, 256, 64, n_iter=32, length=4000, seed=0, history=history)
    theirs = librosa.griffinlim(mag.numpy(), n_iter=32, hop_length=64, n_fft=256, length=4000, random_state=0)
    sc_ours = A.spectral_convergence(mag, ours, 256, 64)
    sc_theirs = A.spectral_convergence(mag, torch.from_numpy(theirs), 256, 64)
    assert history[-1] < history[0] and sc_ours < 0.5 * history[0]
    assert sc_ours < 1.5 * sc_theirs + 0.02, (sc_ours, sc_theirs)
    # the phase is lost: the waveform differs though its magnitudes match
    assert (ours - x).norm() / x.norm() > 0.3


def test_mu_law_against_librosa_and_torchaudio_conventions(clips):
    x = torch.cat([clips.waveforms.flatten()[:5000].double(), torch.linspace(-1, 1, 1001, dtype=torch.float64)])
    np.testing.assert_allclose(A.mu_law_compress(x).numpy(), librosa.mu_compress(x.numpy(), quantize=False), atol=1e-12)
    np.testing.assert_allclose(A.mu_law_expand(A.mu_law_compress(x)).numpy(), x.numpy(), atol=1e-12)
    codes = A.mu_law_encode(x)
    assert codes.dtype == torch.long and codes.min() == 0 and codes.max() == 255
    lib = torch.from_numpy(librosa.mu_compress(x.numpy(), quantize=True)).long()
    assert lib.min() == -128 and lib.max() == 127  # librosa's codes are signed
    y = A.mu_law_compress(x)
    assert torch.equal(codes, ((y + 1) / 2 * 255 + 0.5).floor().long())  # torchaudio: nearest level in [0, 255]
    assert torch.equal(lib + 128, torch.ceil((y + 1) / 2 * 255).long().clamp(min=0))  # librosa: the level above
    assert 0 < (lib + 128 != codes).float().mean() < 1 and (lib + 128 - codes).abs().max() == 1
    back = A.mu_law_decode(codes)
    half_level = A.mu_law_expand(y.abs() + 1 / 255) - A.mu_law_expand(y.abs())  # rounding moves y by <= 1/255
    assert ((back.double() - x).abs() <= half_level + 1e-6).all()  # within half a level of the original


def test_bad_audio_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="sample rate"):
        A.mel_filterbank(0, 256, 32)
    with pytest.raises(ValueError, match="sample rate"):
        A.mel_filterbank(-8000, 256, 32)
    with pytest.raises(ValueError, match="empty.*fewer mels or a larger n_fft"):
        A.mel_filterbank(8000, 64, 64)
    with pytest.raises(ValueError, match="empty"):
        A.stft(torch.zeros(0), 256, 64)
    with pytest.raises(ValueError, match="NaN"):
        A.stft(torch.tensor([0.0, float("nan"), 0.0] * 100), 256, 64)
    with pytest.raises(ValueError, match="shorter than one frame"):
        A.stft(torch.zeros(100), 256, 64, center=False)
    with pytest.raises(ValueError, match="NaN"):
        A.mu_law_encode(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="mu"):
        A.mu_law_encode(torch.zeros(3), mu=0)
    with pytest.raises(ValueError, match="integer codes"):
        A.mu_law_decode(torch.tensor([0, 300]))
    with pytest.warns(UserWarning, match="Empty filters"):  # librosa only warns for the same arguments
        librosa.filters.mel(sr=8000, n_fft=64, n_mels=64)


# -------------------------------------------------------------------------------------------- RVQ


def test_rvq_equals_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    dim, size, n_q = 8, 16, 4
    rvq = vqp.ResidualVQ(dim=dim, num_quantizers=n_q, codebook_size=size).eval()
    books = torch.randn(n_q, size, dim) * torch.tensor([1.0, 0.5, 0.25, 0.1])[:, None, None]
    with torch.no_grad():
        for layer, book in zip(rvq.layers, books):
            layer._codebook.embed.copy_(book[None])
        x = torch.randn(3, 50, dim)
        quantized, indices, _ = rvq(x)
    codes, x_hat = codec.residual_quantize(x, books)
    assert torch.equal(indices, codes)
    assert torch.allclose(quantized, x_hat, atol=1e-6)
    assert torch.allclose(codec.residual_decode(codes, books), x_hat, atol=1e-6)


def test_rvq_error_falls_with_each_codebook_and_the_first_carries_most():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.3, 0.1])
    books = codec.fit_residual_codebooks(x, n_q=6, k=16, iters=10)
    errors = [float((x - codec.residual_quantize(x, books, n)[1]).pow(2).mean()) for n in range(1, 7)]
    total = float(x.pow(2).mean())
    gains = [total - errors[0]] + [a - b for a, b in zip(errors, errors[1:])]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert gains[0] == max(gains)
    assert codec.bitrate(8, 1024, 75) == 6000.0  # EnCodec's 6 kbps


# ------------------------------------------------------------------------------------------ WaveNet


def test_receptive_field_by_gradient_probing():
    torch.manual_seed(0)
    model = WaveNet(channels=8, skip_channels=8, kernel_size=3, dilations=[1, 2, 4, 1, 2], num_labels=3).double()
    R = model.receptive_field
    assert R == (3 - 1) * (1 + 2 + 4 + 1 + 2) + 1
    T, t = 60, 45
    x = torch.randn(1, 8, T, dtype=torch.float64, requires_grad=True)
    model.forward_embedded(x, torch.tensor([1]))[0, :, t].sum().backward()
    touched = x.grad.abs().sum(dim=1)[0] > 0
    assert touched.nonzero().flatten().tolist() == list(range(t - R + 1, t + 1))


def test_fast_generation_equals_naive():
    torch.manual_seed(0)
    model = WaveNet(channels=16, skip_channels=16, dilations=[1, 2, 4, 8, 1, 2, 4, 8], num_labels=9).double().eval()
    labels = torch.tensor([0, 3, 7])
    fast = model.generate(200, batch=3, labels=labels, seed=11, fast=True)
    naive = model.generate(200, batch=3, labels=labels, seed=11, fast=False)
    assert torch.equal(fast, naive)
    assert not torch.equal(fast, model.generate(200, batch=3, labels=labels, seed=12))
    prime = torch.randint(0, 256, (3, 20))  # a prime shorter than the receptive field, too
    assert torch.equal(model.generate(50, batch=3, labels=labels, seed=1, prime=prime),
                       model.generate(50, batch=3, labels=labels, seed=1, prime=prime, fast=False))
    with pytest.raises(ValueError, match="labels"):
        model.generate(5)


def test_wavenet_rejects_float_input():
    with pytest.raises(ValueError, match="integer codes"):
        WaveNet()(torch.zeros(1, 10))


def test_bundled_wavenet_beats_chance_by_a_nat():
    from mmcourse import pretrained

    model = pretrained.load("wavenet_audio")
    info = pretrained.card("wavenet_audio")
    assert model.receptive_field == info["metrics"]["receptive_field"]
    clips = make_audio(18, seed=123, split="all")
    nll = nll_nats(model, A.mu_law_encode(clips.waveforms[:, :2000]), clips.labels)
    assert nll <= math.log(256) - 1, nll
    assert info["metrics"]["test_nll_nats"] <= math.log(256) - 1


def test_wavenet_recipe_is_deterministic():
    from mmcourse.recipes import wavenet_audio

    a, _ = wavenet_audio.train(steps=2, progress=False, evaluate=False, train_clips=32)
    b, _ = wavenet_audio.train(steps=2, progress=False, evaluate=False, train_clips=32)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------------------------- CLAP


def test_bundled_clap_classifies_zero_shot():
    from mmcourse import pretrained

    info = pretrained.card("clap_audio")
    assert info["metrics"]["zero_shot_all"] > 0.7  # nine kinds, chance 0.11; major and minor chords stay confused
    model = pretrained.load("clap_audio")
    from mmcourse.recipes.clap_audio import evaluate_clap

    fresh = evaluate_clap(model, seed=4242, n=90)
    assert fresh["zero_shot_all"] > 0.6
    assert fresh["recall"]["text→audio"]["10"] > 0.7


def test_clap_recipe_is_deterministic():
    from mmcourse.recipes import clap_audio

    a, _ = clap_audio.train(steps=2, progress=False, evaluate=False, train_clips=128)
    b, _ = clap_audio.train(steps=2, progress=False, evaluate=False, train_clips=128)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------------------------------ widget


def test_spectrogram_explorer_redraws_and_names_empty_filters():
    import matplotlib

    matplotlib.use("Agg")
    from mmcourse.widgets.spectrogram import SpectrogramExplorer

    explorer = SpectrogramExplorer(make_audio(1, seed=4, split="all").waveforms[0], 8000)
    fig = explorer.render(256, 64, 32, "Slaney (librosa)")
    assert "63 frames x 32 mels" in fig.axes[0].get_title()
    assert explorer.render(1024, 128, 64, "HTK, no norm (torchaudio)") is fig  # drawn once, updated after
    assert explorer._image.get_array().shape == (64, 32)
    assert "empty" in explorer.render(64, 16, 128, "Slaney (librosa)").axes[0].get_title()
    assert type(explorer.widget()).__name__ == "VBox"
