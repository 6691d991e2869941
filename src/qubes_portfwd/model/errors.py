"""The one error type of the model: what was wrong, in which field, and what is allowed."""


class ValidationError(ValueError):
    """Rejected input; `field` names the offending field, the message the allowed form."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def at_line(self, line_no: int) -> "ValidationError":
        """The same error, located in a multi-line request (lines count from 1)."""
        located = ValidationError(self.field, f"{self.message} (line {line_no})")
        located.line_no = line_no  # type: ignore[attr-defined]
        return located
