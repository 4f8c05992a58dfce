"""Training: the loop over a kind's phases with its saves and resume (`trainer`), and the speed benchmark (`bench`)."""
