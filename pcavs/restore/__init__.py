"""Face restoration with GFPGAN v1.4: the network, its weights, and `Restorer`."""
