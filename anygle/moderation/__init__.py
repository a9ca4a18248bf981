"""Moderation core: classify chat messages, track grooming and split contact details per
sender, and decide warnings, blocks and bans. Socket-free; the WebSocket server wires it in.

See anygle/moderation/README.md for the rule file format and the escalation policy.
"""

from .classifier import Classifier, Signal
from .policy import Action, EscalationPolicy
from .rules import load_rules
from .ruleset import Rules
from .verdict import CLEAN, Severity, Verdict
from .window import SenderWindow

__all__ = [
    "CLEAN",
    "Action",
    "Classifier",
    "EscalationPolicy",
    "Rules",
    "SenderWindow",
    "Severity",
    "Signal",
    "Verdict",
    "load_rules",
]
