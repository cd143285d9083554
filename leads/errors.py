"""Errors the lead services share with the services of leads' sub-apps."""


class NotApplicable(ValueError):
    """An operator action that does not apply to the lead as it stands; the message says why."""
