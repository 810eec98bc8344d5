"""Activation: campaigns, the consent-safe audience funnel, holdouts and splits, exports,
incremental syncs and the send log (DESIGN.md section 6)."""

from crmseg.activation.audience import Audience, Step, build_audience, empty_send_log
from crmseg.activation.campaigns import Campaign, CampaignSpec, load_campaigns
from crmseg.activation.runner import ActivationResult, Context, DestinationReport, activate

__all__ = [
    "ActivationResult",
    "Audience",
    "Campaign",
    "CampaignSpec",
    "Context",
    "DestinationReport",
    "Step",
    "activate",
    "build_audience",
    "empty_send_log",
    "load_campaigns",
]
