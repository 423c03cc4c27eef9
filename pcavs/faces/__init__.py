"""Faces found and aligned: detection, the 224x224 PC-AVS crop and its way back into the photo, what a user
passes as face/pose/mouth, following a face through a video, and GFPGAN's FFHQ frame."""
