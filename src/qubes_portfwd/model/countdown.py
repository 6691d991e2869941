"""Time left, as every front end shows it."""


def countdown_text(seconds: float) -> str:
    """A countdown in its two largest units: `45s`, `9m58s`, `2h00m`, `3d04h`."""
    if seconds <= 0:
        return "expired"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02}h"
    if hours:
        return f"{hours}h{minutes:02}m"
    if minutes:
        return f"{minutes}m{secs:02}s"
    return f"{secs}s"
