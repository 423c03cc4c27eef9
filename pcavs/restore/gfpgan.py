"""GFPGAN v1.4 ("GFPGANv1Clean"): restores a 512x512 face aligned to the FFHQ template.

A U-Net encodes the degraded face into one style latent per decoder layer and, on its way
back up, into per-level SFT conditions (scale, shift); both drive a StyleGAN2 decoder that
resamples bilinearly (no FIR blur) and adds the checkpoint's stored noise maps. Module and
parameter names are the released checkpoint's keys. Modulation is applied to the activations
(one shared convolution per batch, demodulation as a per-sample output scale), the same
function as per-sample modulated weights. The style MLP and the auxiliary toRGB heads of the
checkpoint are never read here (input_is_latent, return_rgb=False): see `unused_shapes`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.generator import demodulation, modulated_conv2d, noise_offset, weight_energy

SIZE = 512
STYLE_DIM = 512
LEAKY_SLOPE = 0.2
ACTIVATION_GAIN = math.sqrt(2.0)
RESOLUTIONS = tuple(4 * 2**i for i in range(8))  # 4 ... 512 px
UNET_CHANNELS = dict(zip(RESOLUTIONS, (256, 256, 256, 256, 256, 128, 64, 32)))
DECODER_CHANNELS = dict(zip(RESOLUTIONS, (512, 512, 512, 512, 512, 256, 128, 64)))
NUM_LEVELS = len(RESOLUTIONS) - 1  # up-path / decoder levels, 8 ... 512 px
NUM_LATENTS = 2 * NUM_LEVELS + 2  # one per decoder layer (different_w)
NUM_NOISES = 2 * NUM_LEVELS + 1
MLP_LAYERS = 8


def noise_size(index: int) -> int:
    """Side of noise map `index`: 4, 8, 8, 16, 16, ..., 512, 512."""
    return 2 ** ((index + 5) // 2)


def unused_shapes() -> dict[str, tuple[int, ...]]:
    """Tensors of the released checkpoint that restoration never reads, with their shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(NUM_LEVELS):
        channels = UNET_CHANNELS[RESOLUTIONS[i + 1]]
        shapes[f"toRGB.{i}.weight"] = (3, channels, 1, 1)
        shapes[f"toRGB.{i}.bias"] = (3,)
    for i in range(1, 2 * MLP_LAYERS, 2):
        shapes[f"stylegan_decoder.style_mlp.{i}.weight"] = (STYLE_DIM, STYLE_DIM)
        shapes[f"stylegan_decoder.style_mlp.{i}.bias"] = (STYLE_DIM,)
    return shapes


def resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by 2 or 0.5 (align_corners=False, no antialiasing: 0.5 is a 2x2 average)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


# ------------------------------------------------------------------ U-Net


class ResBlock(nn.Module):
    """conv3x3-lrelu, resample, conv3x3-lrelu; plus the resampled input through a bias-free 1x1 conv."""

    def __init__(self, cin: int, cout: int, factor: float):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = lrelu(self.conv2(resample(lrelu(self.conv1(x)), self.factor)))
        return out + self.skip(resample(x, self.factor))


def condition_head(channels: int) -> nn.Sequential:
    """conv3x3, lrelu, conv3x3: one SFT scale or shift map at U-Net width."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE), nn.Conv2d(channels, channels, 3, padding=1)
    )


# ------------------------------------------------------------------ StyleGAN2 decoder


class ModulatedConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, cout, cin, kernel, kernel))
        self.modulation = nn.Linear(STYLE_DIM, cin)
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The modulated convolution (after a x2 upsample if asked) and the (B, O) demodulation still to apply."""
        styles = self.modulation(latent)
        weight = self.weight[0]
        if self.upsample:  # modulation is per channel, so it commutes with the resize: apply it on the small map
            out = F.conv2d(resample(x * styles[:, :, None, None].to(x.dtype), 2), weight, padding=weight.shape[-1] // 2)
        else:
            out = modulated_conv2d(x, weight, styles)
        return out, demodulation(weight_energy(weight), styles) if self.demodulate else None


class StyleConv(nn.Module):
    """lrelu(sqrt(2) * demodulated conv + weight * noise + bias)."""

    def __init__(self, cin: int, cout: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv(cin, cout, 3, upsample=upsample)
        self.weight = nn.Parameter(torch.empty(1))  # noise strength
        self.bias = nn.Parameter(torch.empty(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out, demod = self.modulated_conv(x, latent)
        offset = noise_offset(noise.to(out.dtype), self.weight, self.bias)
        scale = (demod * ACTIVATION_GAIN).to(out.dtype)[:, :, None, None]
        return F.leaky_relu_(torch.addcmul(offset, out, scale, out=out), LEAKY_SLOPE)  # one pass, in place


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (not demodulated) plus bias, plus the previous RGB upsampled x2."""

    def __init__(self, cin: int):
        super().__init__()
        self.modulated_conv = ModulatedConv(cin, 3, 1, demodulate=False)
        self.bias = nn.Parameter(torch.empty(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, latent: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, latent)[0] + self.bias
        return out if skip is None else out + resample(skip, 2)


class _ConstantInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, DECODER_CHANNELS[4], 4, 4))


class _NoiseMaps(nn.Module):
    """The checkpoint's stored noise maps `noise0` ... `noise14`, (1, 1, r, r)."""

    def __init__(self):
        super().__init__()
        for i in range(NUM_NOISES):
            self.register_buffer(f"noise{i}", torch.empty(1, 1, noise_size(i), noise_size(i)))

    def fixed(self) -> list[torch.Tensor]:
        return [getattr(self, f"noise{i}") for i in range(NUM_NOISES)]


class StyleDecoder(nn.Module):
    """StyleGAN2 synthesis with spatial feature transforms on half of the channels of every level."""

    def __init__(self):
        super().__init__()
        self.constant_input = _ConstantInput()
        self.style_conv1 = StyleConv(DECODER_CHANNELS[4], DECODER_CHANNELS[4])
        self.to_rgb1 = ToRGB(DECODER_CHANNELS[4])
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for low, high in zip(RESOLUTIONS[:-1], RESOLUTIONS[1:]):
            self.style_convs.append(StyleConv(DECODER_CHANNELS[low], DECODER_CHANNELS[high], upsample=True))
            self.style_convs.append(StyleConv(DECODER_CHANNELS[high], DECODER_CHANNELS[high]))
            self.to_rgbs.append(ToRGB(DECODER_CHANNELS[high]))
        self.noises = _NoiseMaps()

    def forward(
        self, latents: torch.Tensor, conditions: list[tuple[torch.Tensor, torch.Tensor]], noise: list[torch.Tensor]
    ) -> torch.Tensor:
        """latents (B, 16, 512), one (scale, shift) per level, 15 noise maps -> RGB (B, 3, 512, 512), unclamped."""
        batch = latents.shape[0]
        start = self.constant_input.weight.expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        out = self.style_conv1(start, latents[:, 0], noise[0])
        rgb = self.to_rgb1(out, latents[:, 1])
        for k, (scale, shift) in enumerate(conditions):
            out = self.style_convs[2 * k](out, latents[:, 2 * k + 1], noise[2 * k + 1])
            conditioned = out[:, out.shape[1] // 2:]  # SFT on the second half of the channels, in place
            torch.addcmul(shift, conditioned, scale, out=conditioned)
            out = self.style_convs[2 * k + 1](out, latents[:, 2 * k + 2], noise[2 * k + 2])
            rgb = self.to_rgbs[k](out, latents[:, 2 * k + 3], rgb)
        return rgb


# ------------------------------------------------------------------ the restorer


class GFPGAN(nn.Module):
    """Aligned face (B, 3, 512, 512) in [-1, 1] -> restored face (B, 3, 512, 512), unclamped."""

    def __init__(self):
        super().__init__()
        self.conv_body_first = nn.Conv2d(3, UNET_CHANNELS[SIZE], 1)
        downs = RESOLUTIONS[::-1]  # 512 ... 4: each block halves
        self.conv_body_down = nn.ModuleList(
            ResBlock(UNET_CHANNELS[high], UNET_CHANNELS[low], 0.5) for high, low in zip(downs[:-1], downs[1:])
        )
        self.final_conv = nn.Conv2d(UNET_CHANNELS[4], UNET_CHANNELS[4], 3, padding=1)
        ups = RESOLUTIONS[:-1]  # 4 ... 256: each block doubles
        self.conv_body_up = nn.ModuleList(ResBlock(UNET_CHANNELS[r], UNET_CHANNELS[2 * r], 2) for r in ups)
        self.condition_scale = nn.ModuleList(condition_head(UNET_CHANNELS[2 * r]) for r in ups)
        self.condition_shift = nn.ModuleList(condition_head(UNET_CHANNELS[2 * r]) for r in ups)
        self.final_linear = nn.Linear(UNET_CHANNELS[4] * 4 * 4, NUM_LATENTS * STYLE_DIM)
        self.stylegan_decoder = StyleDecoder()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The bottleneck (B, 256, 4, 4, after final_conv and lrelu) and the U-Net skips, deepest first."""
        feature = lrelu(self.conv_body_first(x))
        skips = []
        for block in self.conv_body_down:
            feature = block(feature)
            skips.insert(0, feature)
        return lrelu(self.final_conv(feature)), skips

    def latents(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """The style code: one 512-d latent per decoder layer, (B, 16, 512); no style MLP (input_is_latent)."""
        return self.final_linear(bottleneck.flatten(1)).view(-1, NUM_LATENTS, STYLE_DIM)

    def conditions(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(scale, shift) for each decoder level, 8 ... 512 px, from the up path."""
        feature, out = bottleneck, []
        for i, skip in enumerate(skips):
            feature = self.conv_body_up[i](feature + skip)
            out.append((self.condition_scale[i](feature), self.condition_shift[i](feature)))
        return out

    def random_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0, 1) maps (B, 1, r, r) in layer order, drawn on the CPU (a seed gives the same faces anywhere)."""
        device = self.stylegan_decoder.noises.noise0.device
        return [torch.randn((batch, 1, noise_size(i), noise_size(i)), generator=generator).to(device)
                for i in range(NUM_NOISES)]

    def forward(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`noise`: 15 maps, default the checkpoint's stored ones (deterministic)."""
        bottleneck, skips = self.encode(x.contiguous(memory_format=torch.channels_last))
        conditions = self.conditions(bottleneck, skips)
        noise = self.stylegan_decoder.noises.fixed() if noise is None else noise
        return self.stylegan_decoder(self.latents(bottleneck), conditions, noise)
