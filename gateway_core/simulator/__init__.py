"""Partner simulator: speaks real OpenAI/Anthropic wire formats with configurable misbehaviour."""

from gateway_core.simulator.app import create_app, serve
from gateway_core.simulator.behaviour import PartnerBehaviour, SimulatedPartner, SimulatorConfig

__all__ = ["PartnerBehaviour", "SimulatedPartner", "SimulatorConfig", "create_app", "serve"]
