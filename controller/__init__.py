"""The controller: rollouts on Secret changes and generated credentials."""
