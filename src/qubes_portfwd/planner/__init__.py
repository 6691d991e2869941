"""The planner (pure): every qube's rules + topology + time -> per-forward decisions and entries."""

from .plan import DEFAULT_RULES, conflicts_for, plan
from .values import ForwardPlan, ForwardState, HopRole, Plan, PlannedHop

__all__ = [
    "DEFAULT_RULES",
    "ForwardPlan",
    "ForwardState",
    "HopRole",
    "Plan",
    "PlannedHop",
    "conflicts_for",
    "plan",
]
