"""The scheduler service: timed obligations (28-day notices, reviews) at their send_at, deadlines and escalation,
acknowledgements, and the C6 list review; one active instance at a time (a lease), state rebuilt from Kafka."""
