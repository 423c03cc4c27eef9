"""G: the modulated StyleGAN2 synthesis network at 224x224 (spec §3).

The constant input is replaced by the identity encoder's spatial map (512x7x7); every
layer gets the same 2560-d style vector. Modulation is applied to the activations
(one shared convolution for the whole batch, demodulation as a per-sample output scale),
which is the same function as the reference's per-sample weights, computed faster.
Activations and weights are channels-last throughout: oneDNN's convolutions, above all the
transposed ones (1.3-1.8x) and the depthwise blur (2-5.6x), run faster so than in NCHW on AVX-512 CPUs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import STYLE_DIM

CHANNELS = (512, 512, 512, 512, 256, 128)  # at 7, 14, 28, 56, 112, 224 px
NUM_NOISES = 2 * (len(CHANNELS) - 1) + 1
LEAKY_SLOPE = 0.2
ACTIVATION_GAIN = math.sqrt(2.0)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """Zero-insert upsample by `up`, pad (before, after), then filter each channel with `kernel`."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    weight = torch.flip(kernel, (0, 1)).to(x.dtype).expand(c, 1, *kernel.shape)
    if pad[0] == pad[1]:
        return F.conv2d(x, weight, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, (pad[0], pad[1], pad[0], pad[1])), weight, groups=c)


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, upsample: bool = False
) -> torch.Tensor:
    """Convolve x (B, I, H, W) with weight (O, I, k, k) modulated per sample by styles (B, I), not demodulated.

    With `upsample`, a stride-2 transposed convolution (the caller blurs afterwards).
    """
    assert x.shape[1] == weight.shape[1] == styles.shape[1], (x.shape, weight.shape, styles.shape)
    if weight.shape[-1] == 1 and not upsample:  # 1x1: per-sample (O, I) weights, one read of x and no scaled copy
        per_sample = weight[:, :, 0, 0] * styles[:, None, :].to(weight.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):
            pixels = x.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, I), a view
            return (pixels @ per_sample.transpose(1, 2)).unflatten(1, x.shape[2:]).permute(0, 3, 1, 2)
        return (per_sample @ x.flatten(2)).unflatten(2, x.shape[2:])
    x = x * styles[:, :, None, None].to(x.dtype)
    if upsample:
        return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    return F.conv2d(x, weight, padding=weight.shape[-1] // 2)


def weight_energy(weight: torch.Tensor) -> torch.Tensor:
    """(O, I) sums over the kernel of weight (O, I, k, k) squared, in float32: what `demodulation` needs."""
    return weight.float().square().sum((2, 3))


def demodulation(energy: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Per-sample output scale (B, O) that gives the modulated weights unit norm: rsqrt(sum w^2 s^2 + 1e-8),
    from the weight's `weight_energy` and the styles (B, I)."""
    return torch.rsqrt(styles.float().square() @ energy.t() + 1e-8)


def noise_offset(noise: torch.Tensor, strength: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """strength * noise (N, 1, H, W) + bias (1, C, 1, 1) as a channels-last (N, C, H, W): added to a channels-last
    activation, that is one contiguous pass."""
    return (strength * noise.permute(0, 2, 3, 1) + bias.view(1, 1, 1, -1)).permute(0, 3, 1, 2)


class EqualLinear(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin))
        self.bias = nn.Parameter(torch.empty(cout))
        self.scale = 1.0 / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight.t(), alpha=self.scale)


class ModulatedConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, cout, cin, kernel, kernel))
        self.modulation = EqualLinear(STYLE_DIM, cin)
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            self.blur = _Kernel()

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The modulated convolution and, when demodulating, the (B, O) scale still to apply to it."""
        weight, energy = self._scaled()
        styles = self.modulation(style)
        out = modulated_conv2d(x, weight, styles, self.upsample)
        if self.upsample:
            out = upfirdn2d(out, self.blur.kernel, up=1, pad=(1, 1))
        if not self.demodulate:
            return out, None
        return out, demodulation(energy, styles)

    def _scaled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scaled weight (O, I, k, k) and its energy per (O, I) in float32, kept between calls in inference
        until the weight changes (loading, .to(), an in-place edit); recomputed every call when autograd records
        and under torch.compile (which folds them itself)."""
        weight = self.weight
        if (torch.is_grad_enabled() and weight.requires_grad) or torch.compiler.is_compiling():
            scaled = weight[0] * self.scale
            return self._layout(scaled), weight_energy(scaled)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self.__dict__.get("_scaled_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                scaled = weight[0] * self.scale
                cached = (key, self._layout(scaled), weight_energy(scaled))
            self.__dict__["_scaled_cache"] = cached
        return cached[1], cached[2]

    def _layout(self, scaled: torch.Tensor) -> torch.Tensor:
        """Channels-last in the order oneDNN reads without a copy: (O, I, k, k), or (I, O, k, k) behind the
        transposed view when the convolution is a transposed one."""
        if self.upsample:
            return scaled.transpose(0, 1).contiguous(memory_format=torch.channels_last).transpose(0, 1)
        return scaled.contiguous(memory_format=torch.channels_last)


class _Kernel(nn.Module):
    """Holds a 4x4 FIR kernel buffer under the checkpoint's `.kernel` name."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", torch.empty(4, 4))


class _Noise(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1))


class _Bias(nn.Module):
    """Holds FusedLeakyReLU's bias under the checkpoint's `.activate.bias` name."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.empty(1, channels, 1, 1))


class StyledConv(nn.Module):
    """Modulated conv, noise, FusedLeakyReLU: lrelu(d * conv + w * noise + b) * sqrt(2), in two passes.

    sqrt(2) moves inside the leaky ReLU (it is positively homogeneous), so the output is
    one fused multiply-add and one in-place activation.
    """

    def __init__(self, cin: int, cout: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, upsample=upsample)
        self.noise = _Noise()
        self.activate = _Bias(cout)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out, demod = self.conv(x, style)
        gain = ACTIVATION_GAIN
        offset = noise_offset(noise.to(out.dtype), self.noise.weight * gain, self.activate.bias * gain)
        scale = (demod * gain).to(out.dtype)[:, :, None, None]
        return F.leaky_relu_(torch.addcmul(offset, out, scale, out=out), LEAKY_SLOPE)  # in place: keeps channels-last


class ToRGB(nn.Module):
    def __init__(self, cin: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = _Kernel()
        self.conv = ModulatedConv2d(cin, 3, 1, demodulate=False)
        self.bias = nn.Parameter(torch.empty(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style)[0] + self.bias
        if skip is not None:
            out = out + upfirdn2d(skip, self.upsample.kernel, up=2, pad=(2, 1))
        return out


class _NoiseBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        for i in range(NUM_NOISES):
            size = 7 * 2 ** ((i + 1) // 2)
            self.register_buffer(f"noise_{i}", torch.empty(1, 1, size, size))

    def fixed(self) -> list[torch.Tensor]:
        return [getattr(self, f"noise_{i}") for i in range(NUM_NOISES)]


class Generator(nn.Module):
    """Identity map (B, 512, 7, 7) + style (B, 2560) -> image (B, 3, 224, 224) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.conv1 = StyledConv(CHANNELS[0], CHANNELS[0])
        self.to_rgb1 = ToRGB(CHANNELS[0], upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for cin, cout in zip(CHANNELS[:-1], CHANNELS[1:]):
            self.convs.append(StyledConv(cin, cout, upsample=True))
            self.convs.append(StyledConv(cout, cout))
            self.to_rgbs.append(ToRGB(cout))
        self.noises = _NoiseBuffers()

    def random_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0, 1) noise maps for a batch (drawn on the CPU, so a seed gives the same video anywhere)."""
        device = self.noises.noise_0.device
        return [
            torch.randn((batch, *n.shape[1:]), generator=generator).to(device) for n in self.noises.fixed()
        ]

    def forward(
        self, spatial: torch.Tensor, style: torch.Tensor, noise: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        noise = self.noises.fixed() if noise is None else noise
        spatial = spatial.expand(style.shape[0], -1, -1, -1).contiguous(memory_format=torch.channels_last)
        out = self.conv1(spatial, style, noise[0])
        skip = self.to_rgb1(out, style)
        for i, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * i](out, style, noise[2 * i + 1])
            out = self.convs[2 * i + 1](out, style, noise[2 * i + 2])
            skip = to_rgb(out, style, skip)
        return torch.tanh(skip)
