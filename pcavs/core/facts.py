"""Facts of the PC-AVS checkpoint that every layer relies on, named once: the frame rate the networks were
trained at, the sample rate their audio encoder hears, and the size of the face crop they see and make."""

FPS = 25  # video frames per second: every video pcavs reads or writes runs at it
SAMPLE_RATE = 16000  # Hz: what PC-AVS's audio encoder (and SyncNet) hear
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: the audio of one frame (40 ms)
CROP_SIZE = 224  # px: the side of the aligned face crop the encoders see and the generator makes
