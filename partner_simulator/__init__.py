"""Partner simulator: speaks real OpenAI/Anthropic wire formats with configurable misbehaviour."""

from partner_simulator.app import create_app, serve
from partner_simulator.behaviour import PartnerBehaviour, SimulatedPartner, SimulatorConfig

__all__ = ["PartnerBehaviour", "SimulatedPartner", "SimulatorConfig", "create_app", "serve"]
