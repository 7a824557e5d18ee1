"""The rules service: canonical events + the PPO register -> obligations with deadlines (the rule book)."""
