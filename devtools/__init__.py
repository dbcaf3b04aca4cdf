"""Development, test and benchmark tooling. Not shipped; gateway_core, workers and gateway_api never import it."""
