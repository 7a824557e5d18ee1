"""Intake: accepts payloads in every supported format and turns them into canonical events."""
