"""Training: the recipe (optimizer, schedule, loss), the loop with its saves and resume, and the speed benchmark."""
