"""The web console: what is open for a BCU, the custody countdown, the register and audit trails (issue 17)."""
