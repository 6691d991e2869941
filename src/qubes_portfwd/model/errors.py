"""The one error type of the model: what was wrong, in which field, and what is allowed."""

# A message quotes the input it refuses; past this it says no more (an error is for people,
# and a hostile input must not grow every log line and reply that carries it).
MAX_MESSAGE = 600


class ValidationError(ValueError):
    """Rejected input; `field` names the offending field, the message the allowed form."""

    def __init__(self, field: str, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def at_line(self, line_no: int) -> "ValidationError":
        """The same error, located in a multi-line request (lines count from 1)."""
        located = ValidationError(self.field, f"{self.message} (line {line_no})")
        located.line_no = line_no  # type: ignore[attr-defined]
        return located
