"""The scheduler service: fires timed obligations (28-day notices, reviews) at their send_at."""
