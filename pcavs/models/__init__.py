"""The networks and their weights: PC-AVS's four networks, its audio features, one safe checkpoint reader
for every model, the registry of every model's published weights (`registry.py`) with its one installer
(`download.py`), and the conversion between pictures and tensors."""
