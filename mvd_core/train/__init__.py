"""Training: driver, epoch loop, resume, run folder, logs, schedule, several processes."""
