"""The job: a photo, a voice and a head motion in; frames and the mp4 out (`Pipeline`, `generate`, the output
frame of each mode, and the restoration step)."""
