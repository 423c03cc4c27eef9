"""Many videos: a jobs table checked row by row, run in this process or on Ray workers, and a results table."""
