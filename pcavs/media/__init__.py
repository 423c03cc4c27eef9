"""Media in and out: ffmpeg, what a file holds, audio and video through pipes, photos."""
