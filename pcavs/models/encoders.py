"""The three encoders: identity (V), pose and mouth (E), audio content (A_sync). Spec §3.

Each takes plain tensors and holds only the parts inference reads; the checkpoint's
unused tensors are checked and dropped by `pcavs.models.weights`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import PreActConvBlock, ResNeXtBottleneck, SEBasicBlock

IDENTITY_DIM = 2048
SPATIAL_DIM = 512
MOUTH_DIM = 500
POSE_DIM = 12
FEATURE_DIM = 512
STYLE_DIM = IDENTITY_DIM + MOUTH_DIM + POSE_DIM  # 2560
AUDIO_MOUTH_WEIGHT = 1.2  # the reference scales the audio feature before the mouth head


class _ResNeXt50Trunk(nn.Module):
    """torchvision's resnext50_32x4d up to layer4 (no pooling, no fc)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layers = []
            for b in range(blocks):
                layers.append(ResNeXtBottleneck(cin, planes, stride if b == 0 else 1))
                cin = planes * 4
            setattr(self, f"layer{index}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class IdentityEncoder(nn.Module):
    """V: face crop (B, 3, 224, 224) -> pooled identity (B, 2048) and spatial map (B, 512, 7, 7)."""

    def __init__(self):
        super().__init__()
        self.model = _ResNeXt50Trunk()
        self.conv1x1 = nn.Conv2d(IDENTITY_DIM, SPATIAL_DIM, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model(image)
        pooled = features.mean((2, 3))
        spatial = F.adaptive_avg_pool2d(self.conv1x1(features), 7)
        return pooled, spatial


class _HourGlass(nn.Module):
    """FAN hourglass over 256 channels; modules named b1_L, b2_L, b2_plus_1, b3_L as in the checkpoint."""

    def __init__(self, depth: int, channels: int = 256):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", PreActConvBlock(channels, channels))
            self.add_module(f"b2_{level}", PreActConvBlock(channels, channels))
            self.add_module(f"b3_{level}", PreActConvBlock(channels, channels))
        self.b2_plus_1 = PreActConvBlock(channels, channels)

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = getattr(self, f"b1_{level}")(x)
        lower = getattr(self, f"b2_{level}")(F.max_pool2d(x, 2, stride=2))
        lower = self._level(level - 1, lower) if level > 1 else self.b2_plus_1(lower)
        lower = getattr(self, f"b3_{level}")(lower)
        return upper + F.interpolate(lower, size=upper.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class _FanFeatures(nn.Module):
    """FAN trunk with one hourglass, then a small head to a 512-d feature."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = PreActConvBlock(64, 128)
        self.conv3 = PreActConvBlock(128, 128)
        self.conv4 = PreActConvBlock(128, 256)
        self.m0 = _HourGlass(4)
        self.top_m_0 = PreActConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = nn.Conv2d(256, 68, 1)
        self.bn5 = nn.BatchNorm2d(68)
        self.conv6 = nn.Conv2d(68, 1, 3, stride=2, padding=1)
        self.fc = nn.Linear(28 * 28, FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = self.l0(F.relu(self.bn_end0(self.conv_last0(x))))
        x = self.conv6(F.relu(self.bn5(x)))
        return self.fc(F.relu(x.flatten(1)))


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(), nn.Linear(FEATURE_DIM, FEATURE_DIM))


class PoseMouthEncoder(nn.Module):
    """E: face crop -> 512-d feature; heads map it to a head-pose code (12) or a mouth code (500)."""

    def __init__(self):
        super().__init__()
        self.model = _FanFeatures()
        self.to_mouth = _mlp()
        self.mouth_embed = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, MOUTH_DIM))
        self.to_headpose = _mlp()
        self.headpose_embed = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, POSE_DIM))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def headpose_code(self, feature: torch.Tensor) -> torch.Tensor:
        return self.headpose_embed(self.to_headpose(feature))

    def mouth_code_from_video(self, feature: torch.Tensor) -> torch.Tensor:
        return self.mouth_embed(self.to_mouth(feature))

    def mouth_code_from_audio(self, audio_feature: torch.Tensor) -> torch.Tensor:
        return self.mouth_embed(AUDIO_MOUTH_WEIGHT * audio_feature)


class _ResNetSE34(nn.Module):
    """Half-width ResNetSE-34 with self-attentive pooling: mel window (B, 1, 80, 20) -> (B, 512)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        cin = 32
        for index, (cout, blocks, stride) in enumerate(((32, 3, 1), (64, 4, 2), (128, 6, 2), (256, 3, 2)), 1):
            layers = []
            for b in range(blocks):
                layers.append(SEBasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        pooled = 256 * 10  # channels x mel bins after three stride-2 stages
        self.attention = nn.Sequential(
            nn.Conv1d(pooled, 128, 1), nn.ReLU(), nn.BatchNorm1d(128), nn.Conv1d(128, pooled, 1), nn.Softmax(dim=2)
        )
        self.fc = nn.Linear(pooled, FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(F.relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.flatten(1, 2)  # (B, 2560, time)
        return self.fc((x * self.attention(x)).sum(2))


class AudioEncoder(nn.Module):
    """A_sync: mel window (B, 1, 80, 20) -> audio content feature (B, 512)."""

    def __init__(self):
        super().__init__()
        self.model = _ResNetSE34()

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.model(window)
