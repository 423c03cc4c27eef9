"""The networks and their weights: PC-AVS's four networks, its audio features, one safe checkpoint reader
for every model, the weights' installers, and the conversion between pictures and tensors."""
