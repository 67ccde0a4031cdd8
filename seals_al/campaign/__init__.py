"""A campaign: one concept's labeled set, pool and rounds in storage (docs/ARCHITECTURE.md).

:mod:`.config` (settings, creating a campaign), :mod:`.layout` (every key), :mod:`.lease` (one
stage at a time), :mod:`.state` (reading), :mod:`.stages` (ingest, train, select).
"""

from seals_al.campaign.config import CampaignConfig, ensure_campaign, init
from seals_al.campaign.stages import Campaign, StagedLabels
from seals_al.campaign.state import LabelsTimeout, State

__all__ = ["Campaign", "CampaignConfig", "LabelsTimeout", "StagedLabels", "State", "ensure_campaign", "init"]
