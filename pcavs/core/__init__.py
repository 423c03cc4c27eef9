"""The ground floor: errors, job options, devices, files on disk, the bundled assets and the version.

Nothing here imports any other part of pcavs; everything else may import it.
"""
