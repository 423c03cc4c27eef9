"""Scores of talking-face videos: SyncNet's LSE-D and LSE-C as the official scorer computes them, SSIM, PSNR,
mouth-landmark distance and CPBD, and `evaluate()`, which runs them on a video."""
